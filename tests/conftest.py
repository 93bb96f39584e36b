"""Shared fixtures: a composed Hydra config as `python -m vae_lab` would see it."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import vae_lab.train  # noqa: F401  (registers the config resolvers)

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def compose_config(overrides: list[str], output_dir: Path, conf_dir: str = CONF_DIR) -> DictConfig:
    """Compose conf/train.yaml (of ``conf_dir``) with overrides; the run folder is ``output_dir``."""
    if not any(o.startswith("logger=") for o in overrides):
        overrides = [*overrides, "logger=none"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir)):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        del cfg["hydra"]
    return cfg


@pytest.fixture
def make_config(tmp_path):
    """``make_config(["debug=fast", …], name="run")`` -> a config whose run folder is under tmp_path."""

    def make(overrides: list[str], name: str = "run") -> DictConfig:
        return compose_config(overrides, tmp_path / name)

    yield make
    GlobalHydra.instance().clear()


@pytest.fixture(autouse=True)
def single_thread():
    """Tests use tiny tensors: intra-op threads only add synchronisation (and stall on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

"""The orchestrator: check the composed config, set the threads and the seed, run one mode
(vae_lab/modes.py), write metrics.json, and return the metric a sweeper optimises.

Layers, bottom-up: nets/, posteriors/, priors/, objectives, regularisers and metrics/ are plain torch;
models/ assembles them into families; data/ holds the datasets behind thin LightningDataModules; module.py
(the LightningModule) and callbacks.py drive Lightning; instantiators.py, modes.py, resolvers.py and this
file read the Hydra config. No family is imported here."""
from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, open_dict

import vae_lab.resolvers  # noqa: F401  (registers the config resolvers)
from vae_lab.checkpoint_config import experiment_from_checkpoint, parse_overrides
from vae_lab.checkpoints import load_checkpoint, resolve_checkpoint, stored_config
from vae_lab.data.files import default_data_dir, write_atomic
from vae_lab.errors import ConfigError
from vae_lab.instantiators import build_datamodule, build_loggers, build_module, build_trainer, output_dir
from vae_lab.modes import COMMON_MODES, Restored, restore, run_mode, write_metrics
from vae_lab.objectives import BOUNDS
from vae_lab.run_folder import claim, release
from vae_lab.threads import torch_threads
from vae_lab.validation import check_data, check_parts, check_values

log = logging.getLogger(__name__)

__all__ = ["build_datamodule", "build_loggers", "build_module", "build_trainer", "default_data_dir", "output_dir",
           "restore", "run", "torch_threads", "validate"]


def family_modes(cfg: DictConfig) -> dict[str, tuple[str, ...]]:
    """The extra modes the configured model class offers, and the keys each reads."""
    try:
        return dict(get_class(cfg.model._target_).modes)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigError(f"model._target_={cfg.model._target_}: not a model class ({error})") from None


def validate(cfg: DictConfig) -> None:
    """The mode, the bound, every declared value, the (model, dataset) batch kinds and the (posterior,
    prior) pair (vae_lab/validation.py), before anything is built; groups and unknown keys are checked
    by Hydra itself."""
    offered = {**dict.fromkeys(COMMON_MODES), **family_modes(cfg)}
    if cfg.mode not in offered:
        raise ConfigError(f"mode={cfg.mode}: model {cfg.model._target_.rsplit('.', 1)[-1]} offers "
                          f"the modes {list(offered)}")
    if cfg.objective.bound not in BOUNDS:
        raise ConfigError(f"objective.bound={cfg.objective.bound}: allowed values are {list(BOUNDS)}")
    check_values(cfg)
    check_data(cfg)
    check_parts(cfg)
    check_accelerator(cfg)


def check_accelerator(cfg: DictConfig) -> None:
    """``trainer=gpu`` (``trainer.accelerator`` gpu or cuda) where torch sees no CUDA device: one line."""
    accelerator = str(cfg.get("trainer", {}).get("accelerator", "")).lower()
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        choice = HydraConfig.get().runtime.choices.get("trainer") if HydraConfig.initialized() else None
        name = f"trainer={choice}" if choice and choice != "cpu" else f"trainer.accelerator={accelerator}"
        raise ConfigError(f"{name}: no CUDA device here; use trainer=cpu")


def command_line_overrides() -> list[str]:
    """The overrides this run was composed with (Hydra's ``overrides.task``); none outside a Hydra run."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def with_checkpoint(cfg: DictConfig) -> tuple[DictConfig, Restored | None]:
    """A mode that reads a checkpoint (``test``, ``sample``, the family's, a resume: ``mode=train run_dir=…``)
    runs the checkpoint's experiment, changed by the command line only where that is safe
    (vae_lab/checkpoint_config.py); the run folder's ``.hydra/config.yaml`` then says what ran."""
    if cfg.mode == "train" and not cfg.get("run_dir"):
        return cfg, None
    if cfg.mode == "train":  # a resume writes the run's own folder
        with open_dict(cfg):
            cfg.paths.output_dir = str(Path(cfg.run_dir))
    path = resolve_checkpoint(str(cfg.ckpt), cfg.run_dir)
    checkpoint = load_checkpoint(path)
    saved = stored_config(checkpoint)
    if saved is not None:
        cfg = experiment_from_checkpoint(cfg, saved, command_line_overrides(), path)
    return cfg, Restored(path, checkpoint)


def record_config(cfg: DictConfig, resumed: bool = False) -> None:
    """The composed config that ran, in the run folder's ``.hydra/config.yaml`` (where Hydra saved one). A
    resume writes into the run's own folder: there ``.hydra/overrides.yaml`` (what the report reads) also takes
    the resume's overrides (``trainer.max_steps=8000`` replaces the first command's value), so the folder
    describes the run it holds, not the command it started with."""
    saved = Path(cfg.paths.output_dir) / ".hydra" / "config.yaml"
    if not saved.parent.is_dir() or pl.utilities.rank_zero_only.rank != 0:
        return
    write_atomic(saved, OmegaConf.to_yaml(cfg))
    overrides = saved.parent / "overrides.yaml"
    if resumed and overrides.is_file():
        resume = ("mode", "ckpt", "run_dir")  # how the resume was asked for, not what the run is
        added = {key: line for key, line, _ in parse_overrides(command_line_overrides())
                 if key not in resume and not key.startswith("hydra.")}
        kept = [line for key, line, _ in parse_overrides(yaml.safe_load(overrides.read_text()) or [])
                if key not in added]
        write_atomic(overrides, yaml.safe_dump(kept + list(added.values()), default_flow_style=False))


def run(cfg: DictConfig) -> float | None:
    """Run ``cfg.mode``; write metrics.json; return ``cfg.optimized_metric`` for a sweeper."""
    cfg, restored = with_checkpoint(cfg)
    validate(cfg)
    folder = Path(cfg.run_dir if cfg.mode == "train" and cfg.get("run_dir") else cfg.paths.output_dir)
    claim(folder)  # one writer per run folder, for the run's whole life
    if restored is not None:
        record_config(cfg, resumed=cfg.mode == "train")
    threads = torch_threads(cfg.get("torch_threads"))
    if threads is not None:
        torch.set_num_threads(threads)
    pl.seed_everything(cfg.seed, workers=True)
    metrics = {}
    try:
        metrics = run_mode(cfg, restored)
        if metrics:
            path = write_metrics(cfg, metrics)
            log.info("metrics written to %s", path)
    finally:
        import wandb

        if wandb.run is not None:
            wandb.finish()
        release(folder)
    value = metrics.get(cfg.optimized_metric) if metrics else None
    return float(value) if value is not None else None

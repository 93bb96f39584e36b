"""The orchestrator: check the composed config, set the threads and the seed, run one mode
(vae_lab/modes.py), write metrics.json, and return the metric a sweeper optimises.

Layers, bottom-up: nets/, posteriors/, priors/, objectives, regularisers and metrics/ are plain torch;
models/ assembles them into families; data/ holds the datasets behind thin LightningDataModules; module.py
(the LightningModule) and callbacks.py drive Lightning; instantiators.py, modes.py, resolvers.py and this
file read the Hydra config. No family is imported here."""
from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch
from hydra.utils import get_class
from omegaconf import DictConfig

import vae_lab.resolvers  # noqa: F401  (registers the config resolvers)
from vae_lab.data.files import default_data_dir
from vae_lab.errors import ConfigError
from vae_lab.instantiators import build_datamodule, build_loggers, build_module, build_trainer, output_dir
from vae_lab.modes import COMMON_MODES, restore, run_mode, write_metrics
from vae_lab.objectives import BOUNDS
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


def run(cfg: DictConfig) -> float | None:
    """Run ``cfg.mode``; write metrics.json; return ``cfg.optimized_metric`` for a sweeper."""
    validate(cfg)
    threads = torch_threads(cfg.get("torch_threads"))
    if threads is not None:
        torch.set_num_threads(threads)
    pl.seed_everything(cfg.seed, workers=True)
    metrics = {}
    try:
        metrics = run_mode(cfg)
        if metrics:
            path = write_metrics(cfg, metrics)
            log.info("metrics written to %s", path)
    finally:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    value = metrics.get(cfg.optimized_metric) if metrics else None
    return float(value) if value is not None else None

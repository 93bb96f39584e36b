"""The modes of a run: ``train``, ``test`` and ``sample`` (every family's), and the modes a family
offers (``interpolate``, ``convert``, …, run by the family itself). Each returns the flat metrics that
``vae_lab.train.run`` writes to metrics.json (``{}``: none)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig

from vae_lab.checkpoints import config_from_checkpoint, load_checkpoint, resolve_checkpoint
from vae_lab.data.files import write_atomic
from vae_lab.devices import generator_on
from vae_lab.errors import ConfigError
from vae_lab.instantiators import build_datamodule, build_loggers, build_module, build_trainer, log_config, output_dir
from vae_lab.module import LatentVariableModule
from vae_lab.outputs import publish
from vae_lab.resume import keep_csv_history, prepare_training

log = logging.getLogger(__name__)

COMMON_MODES = ("train", "test", "sample")  # every family's; a family adds its own (``LatentVariableModel.modes``)


def write_metrics(cfg: DictConfig, metrics: dict[str, float]) -> Path:
    """metrics.json in the run folder: the flat final metrics (``train/…``, ``val/…``, ``test/…``)."""
    path = output_dir(cfg) / "metrics.json"
    if pl.utilities.rank_zero_only.rank == 0:
        write_atomic(path, json.dumps(dict(sorted(metrics.items())), indent=2) + "\n")
    return path


def restore(cfg: DictConfig) -> tuple[DictConfig, LatentVariableModule, pl.LightningDataModule, Path]:
    """Module and data for an evaluation mode, from ``ckpt`` / ``run_dir``."""
    path = resolve_checkpoint(str(cfg.ckpt), cfg.run_dir)
    checkpoint = load_checkpoint(path)
    cfg = config_from_checkpoint(cfg, checkpoint)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError) as error:
        raise ConfigError(f"ckpt={path}: its weights do not fit model={cfg.model._target_} "
                          f"({str(error).splitlines()[0]}); restore with the settings it was trained with") from None
    log.info("restored %s", path)
    return cfg, module, datamodule, path


def run_test(cfg: DictConfig, trainer: pl.Trainer, module: LatentVariableModule,
             datamodule: pl.LightningDataModule, ckpt_path: str | None = None) -> None:
    pl.seed_everything(cfg.seed, workers=True)  # the same IW draws whenever a checkpoint is tested
    trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)


def mode_train(cfg: DictConfig) -> dict[str, float]:
    """Fit and test the best checkpoint; with ``run_dir``, go on with that run (vae_lab/resume.py)."""
    cfg, resume_from = prepare_training(cfg)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    loggers = build_loggers(cfg)
    if resume_from is not None:
        keep_csv_history(loggers)
        log.info("resuming %s from %s", cfg.run_dir, resume_from)
    log_config(loggers, cfg)
    trainer = build_trainer(cfg, loggers)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    run_test(cfg, trainer, module, datamodule, ckpt_path=best or None)
    return module.final_metrics


def mode_test(cfg: DictConfig) -> dict[str, float]:
    cfg, module, datamodule, _ = restore(cfg)
    loggers = build_loggers(cfg)
    log_config(loggers, cfg)  # a tested checkpoint's run carries its config too
    trainer = build_trainer(cfg, loggers)
    run_test(cfg, trainer, module, datamodule)
    return module.final_metrics


def mode_sample(cfg: DictConfig) -> dict[str, float]:
    num_samples = cfg.eval.num_samples if cfg.get("num_samples") is None else cfg.num_samples
    cfg, module, _, _ = restore(cfg)
    module.eval()
    samples = module.model.sample_outputs(num_samples, generator=generator_on(module.device, cfg.seed))
    if samples is None:
        raise ConfigError(f"mode=sample: model {cfg.model._target_} cannot decode prior samples")
    samples.show()
    log_config(build_loggers(cfg), cfg)  # a wandb run for the samples' table or image grid
    publish(samples, output_dir(cfg), "samples")
    return {}


def mode_of_family(cfg: DictConfig) -> dict[str, float]:
    """A mode the family offers (validated against its ``modes``), run on the restored model."""
    cfg, module, datamodule, _ = restore(cfg)
    module.eval()
    log_config(build_loggers(cfg), cfg)  # a wandb run for the mode's tables (vae_lab.outputs.publish)
    module.model.run_mode(cfg.mode, cfg, datamodule, output_dir(cfg))
    return {}


def run_mode(cfg: DictConfig) -> dict[str, float]:
    return {"train": mode_train, "test": mode_test, "sample": mode_sample}.get(cfg.mode, mode_of_family)(cfg)

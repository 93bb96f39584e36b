"""The modes of a run: ``train``, ``test`` and ``sample`` (every family's), and the modes a family
offers (``interpolate``, ``convert``, …, run by the family itself). Each returns the flat metrics that
``vae_lab.train.run`` writes to metrics.json (``{}``: none)."""
from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.utilities.exceptions import MisconfigurationException, SIGTERMException

from dataclasses import dataclass

from vae_lab.data.files import write_atomic
from vae_lab.devices import generator_on
from vae_lab.callbacks import InterruptCheckpoint
from vae_lab.errors import ConfigError, Interrupted, WriteError
from vae_lab.instantiators import (attach_loggers, build_datamodule, build_loggers, build_module, build_trainer,
                                   log_config, output_dir)
from vae_lab.module import LatentVariableModule
from vae_lab.outputs import publish
from vae_lab.resume import keep_csv_history, prepare_training

log = logging.getLogger(__name__)

COMMON_MODES = ("train", "test", "sample")  # every family's; a family adds its own (``LatentVariableModel.modes``)


@dataclass
class Restored:
    """The checkpoint a mode reads (its config already merged into the run's, vae_lab/checkpoint_config.py)."""

    path: Path
    checkpoint: dict


def write_metrics(cfg: DictConfig, metrics: dict[str, float]) -> Path:
    """metrics.json in the run folder: the flat final metrics (``train/…``, ``val/…``, ``test/…``); written
    whole or not at all (a failed write keeps the previous file and ends in one line)."""
    path = output_dir(cfg) / "metrics.json"
    if pl.utilities.rank_zero_only.rank == 0:
        try:
            write_atomic(path, json.dumps(dict(sorted(metrics.items())), indent=2) + "\n")
        except OSError as error:
            raise WriteError(f"{path}: could not be written ({error.strerror or error}); the previous file is "
                             "intact: free space (or fix the folder) and test again with mode=test") from None
    return path


def restore(cfg: DictConfig, restored: Restored) -> tuple[LatentVariableModule, pl.LightningDataModule]:
    """Module and data for an evaluation mode, from the checkpoint ``ckpt`` / ``run_dir`` names."""
    path = restored.path
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    try:
        module.load_state_dict(restored.checkpoint["state_dict"])
    except (RuntimeError, KeyError) as error:
        raise ConfigError(f"ckpt={path}: its weights do not fit model={cfg.model._target_} "
                          f"({str(error).splitlines()[0]}); restore with the settings it was trained with") from None
    log.info("restored %s", path)
    return module, datamodule


def run_test(cfg: DictConfig, trainer: pl.Trainer, module: LatentVariableModule,
             datamodule: pl.LightningDataModule, ckpt_path: str | None = None) -> None:
    pl.seed_everything(cfg.seed, workers=True)  # the same IW draws whenever a checkpoint is tested
    trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)


def mode_train(cfg: DictConfig, restored: Restored | None) -> dict[str, float]:
    """Fit and test the best checkpoint; with ``run_dir``, go on with that run (vae_lab/resume.py)."""
    cfg, resume_from = prepare_training(cfg, restored.path if restored else None)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    trainer = build_trainer(cfg)  # Lightning's checks first: a refused setting leaves no logger's folder
    loggers = attach_loggers(trainer, cfg)
    if resume_from is not None:
        keep_csv_history(loggers, int(restored.checkpoint.get("global_step", 0)))
        log.info("resuming %s from %s", cfg.run_dir, resume_from)
    log_config(loggers, cfg)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    except (SystemExit, SIGTERMException):
        interrupted(cfg, trainer)
        raise
    except MisconfigurationException as error:  # Lightning's word on the settings (a resume past max_epochs, …)
        raise ConfigError(f"trainer: {' '.join(str(error).split())}") from None
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    run_test(cfg, trainer, module, datamodule, ckpt_path=best or None)
    metrics = {**module.final_metrics, **datamodule.data_metrics()}
    previous = output_dir(cfg) / "metrics.json"
    if resume_from is not None and previous.is_file():  # a resumed run keeps every key the run had
        return {**json.loads(previous.read_text()), **metrics}
    return metrics


def interrupted(cfg: DictConfig, trainer: pl.Trainer) -> None:
    """Training stopped on Ctrl-C / SIGTERM after ``InterruptCheckpoint`` saved ``last.ckpt``: one line that
    says how to go on (exit 130 / 143)."""
    for callback in trainer.callbacks:
        if isinstance(callback, InterruptCheckpoint) and callback.interrupted:
            code, step, path = callback.interrupted
            raise Interrupted(f"interrupted at step {step}; {path} is saved: go on with python -m vae_lab "
                              f"mode=train run_dir={output_dir(cfg)} ckpt=last", code) from None


def mode_test(cfg: DictConfig, restored: Restored) -> dict[str, float]:
    module, datamodule = restore(cfg, restored)
    trainer = build_trainer(cfg)
    log_config(attach_loggers(trainer, cfg), cfg)  # a tested checkpoint's run carries its config too
    run_test(cfg, trainer, module, datamodule)
    return {**module.final_metrics, **datamodule.data_metrics()}


def mode_sample(cfg: DictConfig, restored: Restored) -> dict[str, float]:
    num_samples = cfg.eval.num_samples if cfg.get("num_samples") is None else cfg.num_samples
    module, _ = restore(cfg, restored)
    module.eval()
    decoding = {}
    if cfg.get("greedy") is not None:
        if not isinstance(cfg.greedy, bool):
            raise ConfigError(f"greedy={cfg.greedy}: must be true (argmax decoding) or false (sampled words)")
        if "greedy" not in inspect.signature(module.model.sample_outputs).parameters:
            raise ConfigError(f"mode=sample greedy={str(cfg.greedy).lower()}: model {cfg.model._target_} has one "
                              "way to decode; leave greedy unset")
        decoding["greedy"] = cfg.greedy
    samples = module.model.sample_outputs(num_samples, generator=generator_on(module.device, cfg.seed), **decoding)
    if samples is None:
        raise ConfigError(f"mode=sample: model {cfg.model._target_} cannot decode prior samples")
    samples.show()
    log_config(build_loggers(cfg), cfg)  # a wandb run for the samples' table or image grid
    publish(samples, output_dir(cfg), "samples")
    return {}


def mode_of_family(cfg: DictConfig, restored: Restored) -> dict[str, float]:
    """A mode the family offers (validated against its ``modes``), run on the restored model."""
    module, datamodule = restore(cfg, restored)
    module.eval()
    log_config(build_loggers(cfg), cfg)  # a wandb run for the mode's tables (vae_lab.outputs.publish)
    module.model.run_mode(cfg.mode, cfg, datamodule, output_dir(cfg))
    return {}


def run_mode(cfg: DictConfig, restored: Restored | None) -> dict[str, float]:
    return {"train": mode_train, "test": mode_test, "sample": mode_sample}.get(cfg.mode, mode_of_family)(cfg, restored)

"""Build everything from the composed config and run one mode: train, test, sample, or a mode the
model family offers (``interpolate``, ``convert``, …). Only this file, module.py and callbacks.py
know Hydra and Lightning; no family is imported here."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from vae_lab.checkpoints import config_from_checkpoint, load_checkpoint, resolve_checkpoint
from vae_lab.data.files import default_data_dir, run_id, write_atomic
from vae_lab.devices import generator_on
from vae_lab.errors import ConfigError
from vae_lab.published import published_beta
from vae_lab.resume import keep_csv_history, prepare_training
from vae_lab.validation import check_parts, check_values
from vae_lab.module import LatentVariableModule
from vae_lab.objectives import BOUNDS
from vae_lab.outputs import publish

log = logging.getLogger(__name__)

MODES = ("train", "test", "sample")  # every family's; a family adds its own (``LatentVariableModel.modes``)
OmegaConf.register_new_resolver("vae_lab_data_dir", default_data_dir, replace=True)
OmegaConf.register_new_resolver("vae_lab_run_id", run_id, use_cache=True, replace=True)


def fraction_of_steps(total: int, fraction: float) -> int:
    """``${vae_lab_fraction:${trainer.max_steps},0.3}``: a schedule length as a share of the run."""
    if total is None or total <= 0:
        raise ConfigError(f"trainer.max_steps={total}: this schedule is a fraction of the run; set trainer.max_steps")
    return max(1, int(total * fraction))


OmegaConf.register_new_resolver("vae_lab_fraction", fraction_of_steps, replace=True)
OmegaConf.register_new_resolver("vae_lab_beta", published_beta, replace=True)


def family_modes(cfg: DictConfig) -> dict[str, tuple[str, ...]]:
    """The extra modes the configured model class offers, and the keys each reads."""
    try:
        return dict(get_class(cfg.model._target_).modes)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigError(f"model._target_={cfg.model._target_}: not a model class ({error})") from None


def validate(cfg: DictConfig) -> None:
    """The mode, the bound, every declared value and the (posterior, prior) pair (vae_lab/validation.py),
    before anything is built; groups and unknown keys are checked by Hydra itself."""
    offered = {**dict.fromkeys(MODES), **family_modes(cfg)}
    if cfg.mode not in offered:
        raise ConfigError(f"mode={cfg.mode}: model {cfg.model._target_.rsplit('.', 1)[-1]} offers "
                          f"the modes {list(offered)}")
    if cfg.objective.bound not in BOUNDS:
        raise ConfigError(f"objective.bound={cfg.objective.bound}: allowed values are {list(BOUNDS)}")
    check_values(cfg)
    check_parts(cfg)


def output_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_dir)


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    datamodule = instantiate(cfg.dataset, data_dir=cfg.paths.data_dir, _recursive_=False)
    try:
        datamodule.prepare_data()
    except PermissionError as error:  # the data cache cannot be written
        raise ConfigError(f"paths.data_dir={cfg.paths.data_dir}: cannot write {error.filename or 'there'} "
                          f"({error.strerror}); set paths.data_dir=<a writable folder> or VAE_LAB_DATA_DIR") from None
    datamodule.setup("fit")
    return datamodule


def build_model(cfg: DictConfig, datamodule: pl.LightningDataModule):
    """The family from ``cfg.model``, given the data's settings, the posterior and prior factories of
    ``cfg.posterior`` and ``cfg.prior`` (the prior carries the sampler, ``_partial_``, when it is one that
    needs it) and the bound its regulariser is picked for."""
    if cfg.get("sampler") and "sampler" not in cfg.prior:
        log.warning("sampler=%s is unused: prior=%s draws no samples for its log Z",
                    cfg.sampler._target_.rsplit(".", 1)[-1], cfg.prior._target_.rsplit(".", 1)[-1])
    return instantiate(cfg.model, prior=instantiate(cfg.prior), posterior=instantiate(cfg.posterior),
                       bound=cfg.objective.bound, **datamodule.model_kwargs())


def build_module(cfg: DictConfig, datamodule: pl.LightningDataModule) -> LatentVariableModule:
    return LatentVariableModule(
        model=build_model(cfg, datamodule),
        optimizer=instantiate(cfg.optimizer),
        lr_scheduler=instantiate(cfg.lr_scheduler) if cfg.get("lr_scheduler") else None,
        kl_weight_schedule=instantiate(cfg.annealing),
        k=cfg.k,
        bound=cfg.objective.bound,
        free_bits=cfg.objective.free_bits,
        free_bits_per_dim=cfg.objective.free_bits_per_dim,
        val_samples=cfg.eval.val_samples,
        test_samples=cfg.eval.test_samples,
        chunk_size=cfg.eval.chunk_size,
        chunk_units=cfg.eval.get("chunk_units"),
        text_metrics=cfg.eval.text_metrics,
        max_text_batches=cfg.eval.max_text_batches,
        config=OmegaConf.to_container(cfg, resolve=True),
    )


def sweep_run_name() -> str | None:
    """A multirun job's name: its overrides of the keys its sweep varies (``annealing=cyclical,model.latent_dim=16``):
    the command line's sweeps (in the sweep folder's ``multirun.yaml``) and ``hydra.sweeper.params`` (a
    search space); without either, all the job's overrides."""
    hydra_cfg = HydraConfig.get()
    parser = OverridesParser.create()
    swept = set(hydra_cfg.sweeper.get("params") or {})
    saved = Path(hydra_cfg.sweep.dir) / "multirun.yaml"
    if saved.is_file():
        sweep_arguments = list(OmegaConf.load(saved).hydra.overrides.task)
        swept |= {o.key_or_group for o in parser.parse_overrides(sweep_arguments) if o.is_sweep_override()}
    job = [o.input_line for o in parser.parse_overrides(list(hydra_cfg.overrides.task)) if o.key_or_group in swept]
    return ",".join(job) or hydra_cfg.job.override_dirname or None


def build_loggers(cfg: DictConfig) -> list:
    if not cfg.get("logger"):
        return []
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    loggers = []
    for name, logger_cfg in cfg.logger.items():
        if not logger_cfg or "_target_" not in logger_cfg:
            continue
        summaries = {}
        if name == "wandb":
            output_dir(cfg).mkdir(parents=True, exist_ok=True)
            if multirun and not logger_cfg.get("group"):
                with open_dict(logger_cfg):  # one wandb group per sweep, one run per job
                    logger_cfg.group = Path(HydraConfig.get().sweep.dir).name
                    logger_cfg.name = sweep_run_name()
            summaries = logger_cfg.get("summaries") or {}
            logger_cfg = {key: value for key, value in logger_cfg.items() if key != "summaries"}
        logger = instantiate(logger_cfg)
        for summary, keys in summaries.items():  # the run summary keeps the best value, not the last
            for key in keys:
                logger.experiment.define_metric(key, summary=summary, step_metric="trainer/global_step",
                                                step_sync=True)
        loggers.append(logger)
    return loggers


def build_trainer(cfg: DictConfig, loggers: list) -> pl.Trainer:
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)


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


def log_config(loggers: list, cfg: DictConfig) -> None:
    """Every logger gets the composed config (hyperparameters), so a sweep's runs can be told apart."""
    hyperparameters = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        logger.log_hyperparams(hyperparameters)


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
    """A mode the family offers (validated against ``family_modes``), run on the restored model."""
    cfg, module, datamodule, _ = restore(cfg)
    module.eval()
    log_config(build_loggers(cfg), cfg)  # a wandb run for the mode's tables (vae_lab.outputs.publish)
    module.model.run_mode(cfg.mode, cfg, datamodule, output_dir(cfg))
    return {}


def torch_threads(setting: int | str | None) -> int | None:
    """``torch_threads``: a number as given; ``auto``: the cores the last minute's load average leaves
    free (at least 1), since intra-op threads on cores that other processes keep busy make small models
    several times slower (README, Benchmarks); null: torch's default (one per core)."""
    if setting != "auto":
        return setting
    machine = os.cpu_count() or 1
    ours = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else machine  # a cluster job's share
    load = os.getloadavg()[0]
    threads = max(1, min(ours, machine - round(load)))
    log.info("torch_threads=auto: %d (%d cores of %d for this process, load average %.1f)", threads, ours, machine, load)
    return threads


def run(cfg: DictConfig) -> float | None:
    """Run ``cfg.mode``; write metrics.json; return ``cfg.optimized_metric`` for a sweeper."""
    validate(cfg)
    threads = torch_threads(cfg.get("torch_threads"))
    if threads is not None:
        torch.set_num_threads(threads)
    pl.seed_everything(cfg.seed, workers=True)
    try:
        metrics = {"train": mode_train, "test": mode_test, "sample": mode_sample}.get(cfg.mode, mode_of_family)(cfg)
        if metrics:
            path = write_metrics(cfg, metrics)
            log.info("metrics written to %s", path)
    finally:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    value = metrics.get(cfg.optimized_metric) if metrics else None
    return float(value) if value is not None else None

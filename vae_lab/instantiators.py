"""Everything a run is made of, built from the composed config with ``hydra.utils.instantiate``: the
datamodule, the model family and its LightningModule, the loggers, the callbacks and the trainer."""
from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from vae_lab.errors import ConfigError
from vae_lab.module import LatentVariableModule

log = logging.getLogger(__name__)


def built(node, **kwargs):
    """``instantiate(node, **kwargs)``, with a part's own one-line ``ConfigError`` raised as itself rather than
    inside Hydra's InstantiationException."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__ or error.__context__
        while cause is not None and not isinstance(cause, ConfigError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise cause from None


def output_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_dir)


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    datamodule = built(cfg.dataset, data_dir=cfg.paths.data_dir)  # its parts (an image reader) built too
    try:
        datamodule.prepare_data()
    except OSError as error:  # the data cache cannot be written (no permission, a read-only file system)
        if error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise ConfigError(f"paths.data_dir={cfg.paths.data_dir}: cannot write {error.filename or 'there'} "
                          f"({error.strerror}); set paths.data_dir=<a writable folder> or VAE_LAB_DATA_DIR") from None
    datamodule.setup("fit")
    return datamodule


def build_model(cfg: DictConfig, datamodule: pl.LightningDataModule):
    """The family from ``cfg.model``, given the data's settings, the posterior and prior factories of
    ``cfg.posterior`` and ``cfg.prior`` (the prior carries the sampler, ``_partial_``, when it is one that
    needs it), the extra loss terms of ``cfg.penalties`` and the bound its regulariser is picked for."""
    if cfg.get("sampler") and "sampler" not in cfg.prior:
        log.warning("sampler=%s is unused: prior=%s draws no samples for its log Z",
                    cfg.sampler._target_.rsplit(".", 1)[-1], cfg.prior._target_.rsplit(".", 1)[-1])
    model = built(cfg.model, prior=built(cfg.prior), posterior=built(cfg.posterior), bound=cfg.objective.bound,
                  **datamodule.model_kwargs())
    model.set_penalties({name: instantiate(node) for name, node in (cfg.get("penalties") or {}).items() if node})
    return model


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
        autoencoder_steps=cfg.objective.get("autoencoder_steps", 0),
        term_weights=OmegaConf.to_container(cfg.objective.weights, resolve=True) if cfg.objective.get("weights") else {},
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
        if name == "wandb" and getattr(logger, "_wandb_init", {}).get("anonymous", "") is None:
            del logger._wandb_init["anonymous"]  # Lightning passes anonymous=None, which wandb 0.2x warns about
        for summary, keys in summaries.items():  # the run summary keeps the best value, not the last
            for key in keys:
                logger.experiment.define_metric(key, summary=summary, step_metric="trainer/global_step",
                                                step_sync=True)
        if name == "wandb":  # wandb itself is silent (vae_lab.__main__.quiet_libraries): say where the run is
            log.info("wandb run %s in %s%s", logger.experiment.id, Path(logger.experiment.dir).parent,
                     " (offline: wandb sync <that folder> uploads it)" if logger_cfg.get("offline") else "")
        loggers.append(logger)
    return loggers


def log_config(loggers: list, cfg: DictConfig) -> None:
    """Every logger gets the composed config (hyperparameters), so a sweep's runs can be told apart."""
    hyperparameters = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        logger.log_hyperparams(hyperparameters)


def build_trainer(cfg: DictConfig, loggers: list | None = None) -> pl.Trainer:
    """The Lightning Trainer of ``cfg.trainer``, with ``loggers``; a setting Lightning refuses
    (``trainer.precision=17``) is one line that names it. The trainer is built before the loggers are
    attached (``attach_loggers``), so that a refused setting leaves no logger's folder behind."""
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]
    try:
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=False)
    except InstantiationException as error:
        cause = error.__cause__ or error
        raise ConfigError(f"trainer: Lightning refuses these settings: {' '.join(str(cause).split())}") from None
    trainer.loggers = loggers or []
    return trainer


def attach_loggers(trainer: pl.Trainer, cfg: DictConfig) -> list:
    """The run's loggers (``build_loggers``), attached to ``trainer``."""
    loggers = build_loggers(cfg)
    trainer.loggers = loggers
    return loggers

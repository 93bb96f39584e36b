"""Resuming a killed run: ``mode=train run_dir=<run> ckpt=last`` goes on from ``last.ckpt`` in the
same folder. The model, the optimizer and LR schedule, the step (so the KL-weight schedule), the RBM
samplers' chains and generators (in the model's state dict), the data order (the samplers are seeded
by epoch), torch's random state (``LatentVariableModule``) and the checkpoint callbacks' best come from
the checkpoint; the loggers append to the run's own files (csv / tensorboard version, wandb id)."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from omegaconf import DictConfig, open_dict
from pytorch_lightning.loggers import CSVLogger

from vae_lab.data.files import write_atomic
from vae_lab.errors import ConfigError


def prepare_training(cfg: DictConfig, path: Path | None) -> tuple[DictConfig, Path | None]:
    """``(cfg, checkpoint to resume or None)``. With ``run_dir`` (``cfg`` already the run's experiment, from
    ``path``: vae_lab/checkpoint_config.py) the run's folder becomes the output folder; without it the run
    is new, and a folder that already holds another run's checkpoints is refused rather than overwritten."""
    folder = Path(cfg.paths.output_dir)
    if cfg.run_dir is None:
        if any((folder / "checkpoints").glob("*.ckpt")):
            raise ConfigError(f"{folder} holds another run's checkpoints: resume it with mode=train "
                              f"run_dir={folder} ckpt=last, or give a new hydra.run.dir")
        return cfg, None
    with open_dict(cfg):
        cfg.paths.output_dir = str(Path(cfg.run_dir))
        cfg.trainer.num_sanity_val_steps = 0  # the run checked itself when it started
        for name, logger_cfg in (cfg.get("logger") or {}).items():
            if logger_cfg and "_target_" in logger_cfg:
                _continue_logger(name, logger_cfg, Path(cfg.run_dir))
    return cfg, path


def _continue_logger(name: str, logger_cfg: DictConfig, run_dir: Path) -> None:
    """Point a logger at the run's existing version (csv, tensorboard) or id (wandb)."""
    if name in ("csv", "tensorboard"):
        versions = sorted((run_dir / logger_cfg.get("name", name)).glob("version_*"),
                          key=lambda p: int(p.name.split("_")[-1]))
        if versions:
            logger_cfg.version = int(versions[-1].name.split("_")[-1])
    elif name == "wandb":
        runs = sorted((run_dir / "wandb").glob("*run-*"))
        if runs:
            logger_cfg.id = runs[-1].name.rsplit("-", 1)[-1]
            logger_cfg.resume = "allow"


def keep_csv_history(loggers: list, resume_step: int) -> None:
    """Lightning's CSV writer deletes an existing metrics.csv when it opens a version folder; move it
    aside while the writer opens, and back, so the resumed run appends to it (the header is merged).
    Rows the killed run logged after its checkpoint (``step`` >= ``resume_step``) are dropped: the resumed
    run logs those steps again, so each step is there once."""
    for logger in loggers:
        metrics = Path(logger.log_dir) / "metrics.csv" if isinstance(logger, CSVLogger) else None
        if metrics is None or not metrics.is_file():
            continue
        with open(metrics, newline="") as handle:
            reader = csv.DictReader(handle)
            columns, rows = list(reader.fieldnames or []), list(reader)
        kept = [row for row in rows if not row.get("step") or int(float(row["step"])) < resume_step]
        if len(kept) != len(rows):
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=columns)
            writer.writeheader()
            writer.writerows(kept)
            write_atomic(metrics, text.getvalue())
        aside = metrics.with_suffix(".csv.resume")
        metrics.rename(aside)
        writer = logger.experiment  # opens the writer now, on a folder without metrics.csv
        aside.rename(metrics)
        writer.metrics_keys = sorted(columns)  # the columns it already has

"""Finding and reading checkpoints for test / sample / interpolate / convert."""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from vae_lab.errors import ConfigError


def newest_run_with_checkpoints(root: Path = Path("outputs")) -> Path | None:
    """The most recently modified run folder under ``root`` holding checkpoints/*.ckpt."""
    runs = [p.parent.parent for p in root.glob("**/checkpoints/*.ckpt")]
    return max(runs, key=lambda p: p.stat().st_mtime) if runs else None


def resolve_checkpoint(ckpt: str, run_dir: str | None) -> Path:
    """``ckpt=last|best`` -> ``run_dir/checkpoints/{ckpt}.ckpt``; anything else is a path."""
    if ckpt in ("last", "best"):
        folder = Path(run_dir) if run_dir else newest_run_with_checkpoints()
        if folder is None:
            raise ConfigError(f"ckpt={ckpt}: no run under outputs/ has checkpoints; train first "
                              "(mode=train) or pass run_dir=<run folder> or ckpt=<path to .ckpt>")
        path = folder / "checkpoints" / f"{ckpt}.ckpt"
    else:
        path = Path(ckpt)
    if not path.is_file():
        raise ConfigError(f"ckpt={ckpt}: no checkpoint file at {path}; pass run_dir=<run folder> "
                          "with ckpt=last|best, or ckpt=<path to a .ckpt>")
    return path


def load_checkpoint(path: Path) -> dict:
    """Read a vae_lab checkpoint; a corrupt or foreign file gives one clear error."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises many kinds for a damaged file
        raise ConfigError(f"ckpt={path}: cannot read the checkpoint ({type(error).__name__}: {error}); "
                          "it is corrupt or not a checkpoint: pass ckpt=<a .ckpt written by vae_lab>") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(f"ckpt={path}: not a Lightning checkpoint (no state_dict); "
                          "pass ckpt=<a .ckpt written by vae_lab>")
    return checkpoint


def config_from_checkpoint(cfg: DictConfig, checkpoint: dict) -> DictConfig:
    """Take the model, prior and dataset settings the checkpoint was trained with, so the architecture
    and vocabulary match; a ``dataset.path`` given now still wins (the data may have moved)."""
    saved = checkpoint.get("vae_lab_config")
    if saved is None:
        return cfg
    saved = OmegaConf.create(saved)
    with open_dict(cfg):
        path_now = cfg.dataset.get("path")
        cfg.model = saved.model
        cfg.dataset = saved.dataset
        if "prior" in saved:
            cfg.prior = saved.prior
        if path_now:
            cfg.dataset.path = path_now
    return cfg

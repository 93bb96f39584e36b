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


# targets that moved, old -> new: a checkpoint's stored config still builds after a rename
RENAMED_TARGETS = {f"vae_lab.annealing.{name}": f"vae_lab.schedules.{name}"
                   for name in ("Constant", "Linear", "Sigmoid", "Cyclical", "Piecewise")}

# what a checkpoint's stored config may instantiate: the project's classes and these libraries' parts
TRUSTED_TARGETS = ("vae_lab.", "torch.optim.", "pytorch_lightning.callbacks.", "pytorch_lightning.loggers.")


def load_checkpoint(path: Path) -> dict:
    """Read a vae_lab checkpoint with ``weights_only=True`` (tensors and plain containers: unpickling
    cannot run code); a corrupt, foreign or code-carrying file gives one clear error."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a damaged or unsafe file
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise ConfigError(f"ckpt={path}: cannot read the checkpoint ({type(error).__name__}: {first_line}); "
                          "it is corrupt, not a checkpoint, or holds objects other than tensors and plain "
                          "data: pass ckpt=<a .ckpt written by vae_lab>") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(f"ckpt={path}: not a Lightning checkpoint (no state_dict); "
                          "pass ckpt=<a .ckpt written by vae_lab>")
    return checkpoint


def stored_config(checkpoint: dict) -> DictConfig | None:
    """The config a checkpoint was trained with (``vae_lab_config``), brought up to date: moved targets under
    their new names, the posterior of a checkpoint from before ``posterior=`` was a group (a Gaussian, or an
    image model's ``model.kl_term`` / ``model.relaxation``), the reader of an image dataset from before
    readers (``dataset.source``), without the ``model.beta`` record of the sharpness an image model kept before
    the relaxation alone held it; every ``_target_`` must be the project's (``TRUSTED_TARGETS``). None for a
    checkpoint without one."""
    saved = checkpoint.get("vae_lab_config")
    if saved is None:
        return None
    saved = _without_model_beta(_with_reader(_with_posterior(_renamed(OmegaConf.create(saved)))))
    for key in ("model", "dataset", "prior", "posterior", "penalties", "sampler"):
        if key in saved:
            _check_targets(saved[key], key)
    return saved


def config_from_checkpoint(cfg: DictConfig, checkpoint: dict) -> DictConfig:
    """``cfg`` with the model, posterior, prior and dataset settings the checkpoint was trained with (its
    stored config, ``stored_config``); a ``dataset.path`` given now still wins (the data may have moved).
    The modes use the whole experiment (vae_lab/checkpoint_config.py); this is the parts alone."""
    saved = stored_config(checkpoint)
    if saved is None:
        return cfg
    with open_dict(cfg):
        path_now = cfg.dataset.get("path")
        cfg.model = saved.model
        cfg.dataset = saved.dataset
        if "prior" in saved:
            cfg.prior = saved.prior
        cfg.posterior = saved.posterior
        if path_now:
            cfg.dataset.path = path_now
    return cfg


def _check_targets(node, where: str) -> None:
    """Every ``_target_`` in a checkpoint's stored config names a trusted class (``TRUSTED_TARGETS``)."""
    if OmegaConf.is_dict(node):
        target = node.get("_target_")
        if target is not None and not str(target).startswith(TRUSTED_TARGETS):
            raise ConfigError(f"ckpt: its stored config names {where}._target_={target}, outside "
                              f"{', '.join(TRUSTED_TARGETS)}; refusing to build it: use a checkpoint written by vae_lab")
        for key, value in node.items():
            _check_targets(value, f"{where}.{key}")
    elif OmegaConf.is_list(node):
        for index, value in enumerate(node):
            _check_targets(value, f"{where}[{index}]")


def _renamed(node):
    """The stored config with every moved ``_target_`` (``RENAMED_TARGETS``) under its new name."""
    if OmegaConf.is_dict(node):
        target = node.get("_target_")
        if target in RENAMED_TARGETS:
            node._target_ = RENAMED_TARGETS[target]
        for value in node.values():
            _renamed(value)
    elif OmegaConf.is_list(node):
        for value in node:
            _renamed(value)
    return node


READERS = {"mnist": "vae_lab.data.mnist.MNISTReader", "omniglot": "vae_lab.data.omniglot.OmniglotReader"}


def _with_reader(saved: DictConfig) -> DictConfig:
    """An image dataset's config from before image sources were readers named them ``source: mnist |
    omniglot``; it becomes the reader it meant."""
    dataset = saved.get("dataset")
    if dataset is None or "source" not in dataset or not str(dataset.get("_target_", "")).endswith("ImageDataModule"):
        return saved
    with open_dict(saved):
        source = dataset.pop("source")
        if source not in READERS:
            raise ConfigError(f"ckpt: its dataset.source={source} predates image readers and names no known "
                              f"source ({', '.join(READERS)}); restore it with a checkpoint of a known source")
        dataset.reader = {"_target_": READERS[source], "name": source}
    return saved


GAUSSIAN_POSTERIOR = {"_target_": "vae_lab.posteriors.gaussian.GaussianPosterior", "_partial_": True}


def _with_posterior(saved: DictConfig) -> DictConfig:
    """The stored config with a ``posterior`` (see ``config_from_checkpoint``)."""
    if "posterior" in saved:
        return saved
    with open_dict(saved):
        saved.posterior = GAUSSIAN_POSTERIOR
        if "model" in saved and "kl_term" in saved.model:
            kl_term, relaxation = saved.model.pop("kl_term"), saved.model.pop("relaxation", None)
            if kl_term != "gaussian":
                saved.posterior = {"_target_": "vae_lab.posteriors.bernoulli.BernoulliPosterior", "_partial_": True,
                                   "relaxation": relaxation}
                if kl_term == "gaussian_integral":
                    saved.posterior.relaxation.minimum_lambda = saved.model.get("beta")
    return saved


def _without_model_beta(saved: DictConfig) -> DictConfig:
    """An image model's config from before the relaxation alone held the sharpness kept it as ``model.beta``
    too (the relaxation has its value): the model no longer takes it."""
    model = saved.get("model")
    if model is not None and "beta" in model and str(model.get("_target_", "")).endswith("ImageVAE"):
        with open_dict(saved):
            model.pop("beta")
    return saved

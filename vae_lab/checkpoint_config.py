"""A checkpoint carries its experiment: every mode that reads one (``test``, ``sample``, the family's modes,
a resume) runs the config stored in it, and the command line changes only what is safe to change.

The stored config (``vae_lab_config``, the training run's composed config, brought up to date by
vae_lab/checkpoints.py) gives every key, with three kinds of exception, decided by the command line's own
overrides (Hydra's ``overrides.task``), not by what its defaults happen to be:

- run keys are always this run's: ``mode``, ``ckpt``, ``run_dir``, ``paths`` (the run folder), ``torch_threads``,
  ``tags`` and the modes' keys (``num_samples``, ``sentence_a``, …);
- evaluation keys are the checkpoint's unless the command line sets them, by key (``eval.test_samples=500``,
  ``trainer.limit_test_batches=2``) or by group (``trainer=cpu``, ``debug=fast``, ``logger=csv``): ``eval``,
  ``trainer``, ``callbacks``, ``logger``, ``seed``, ``optimized_metric``, and of ``dataset`` only ``path`` (the data
  may have moved), ``eval_batch_size``, ``num_workers`` and ``limit``;
- everything else defines the trained model (model, posterior, prior, sampler, penalties, k, objective,
  dataset, annealing, optimizer): an override that would change it (``k=1``, ``model=vae``,
  ``model.latent_dim=4``, ``experiment=…``) stops with one line naming the checkpoint's value; one that
  repeats the checkpoint's value is accepted.

Paths the checkpoint's config holds under its old run folder (the checkpoint callbacks' ``dirpath``, the
logger's ``save_dir``) are moved to this run's folder.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from vae_lab.errors import ConfigError

RUN_KEYS = ("mode", "ckpt", "run_dir", "paths", "torch_threads", "tags", "num_samples", "greedy", "sentence_a", "sentence_b",
            "steps", "word", "source", "target", "words_file")
EVALUATION_KEYS = ("eval", "trainer", "callbacks", "logger", "seed", "optimized_metric")
SAFE_DATASET_KEYS = ("path", "eval_batch_size", "num_workers", "limit")
# the groups whose choice defines the trained model, and the config nodes each of them fills
MODEL_GROUPS = {"model": ("model",), "posterior": ("posterior",), "posterior/relaxation": ("posterior.relaxation",),
                "prior": ("prior",), "sampler": ("sampler",), "struct": ("model.struct",), "penalty": ("penalties",),
                "dataset": ("dataset",), "annealing": ("annealing",), "recipe": ("optimizer", "lr_scheduler")}
# the groups that set evaluation keys, and the keys they set
EVALUATION_GROUPS = {"trainer": ("trainer",), "logger": ("logger",), "callbacks": ("callbacks",),
                     "debug": ("eval", "trainer", "callbacks"), "hydra": ()}


def _plain(node):
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _select(cfg: DictConfig, key: str):
    return _plain(OmegaConf.select(cfg, key, default=None, throw_on_missing=False))


def _model_keys(saved: DictConfig) -> list[str]:
    return [key for key in saved if key not in (*RUN_KEYS, *EVALUATION_KEYS)]


def _refuse(override: str, key: str, saved_value, checkpoint: Path) -> None:
    shown = saved_value if not isinstance(saved_value, dict) else saved_value.get("_target_", saved_value)
    raise ConfigError(f"{override}: the checkpoint {checkpoint} was trained with {key}={shown}, and a checkpoint "
                      f"carries its experiment; drop {override.split('=', 1)[0]}=… (or train a new run with it)")


def parse_overrides(overrides: list[str]) -> list[tuple[str, str, bool]]:
    """(key or group, the override as written, is a group choice) of each override."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from vae_lab.validation import CONF

    parsed = []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        parsed.append((key, override.input_line, (CONF / key).is_dir()))
    return parsed


def experiment_from_checkpoint(cfg: DictConfig, saved: DictConfig, overrides: list[str],
                               checkpoint: Path) -> DictConfig:
    """The config a mode runs with: ``saved`` (the checkpoint's) changed by the command line ``cfg`` where it
    may (module docstring); ``overrides``: the command line's, as Hydra parsed them."""
    result = saved.copy()
    with open_dict(result):
        for key in RUN_KEYS:
            if key in cfg:
                result[key] = cfg[key]
        model_keys = _model_keys(saved)
        for key, line, is_group in parse_overrides(overrides):
            top = key.split(".")[0].split("/")[0]
            if is_group and key in EVALUATION_GROUPS:
                for section in EVALUATION_GROUPS[key]:
                    result[section] = cfg[section]
            elif is_group:
                nodes = MODEL_GROUPS.get(key, tuple(model_keys) if key == "experiment" else ())
                for node in nodes:
                    if _select(cfg, node) != _select(saved, node):
                        _refuse(line, node, _select(saved, node), checkpoint)
            elif top in RUN_KEYS or key.startswith("hydra."):
                continue
            elif top in EVALUATION_KEYS or (top == "dataset" and key.split(".")[1:2] and
                                            key.split(".")[1] in SAFE_DATASET_KEYS):
                OmegaConf.update(result, key, OmegaConf.select(cfg, key), merge=False, force_add=True)
            elif _select(cfg, key) != _select(saved, key):
                _refuse(line, key, _select(saved, key), checkpoint)
        _move_paths(result, str(saved.paths.output_dir) if "paths" in saved else None, str(cfg.paths.output_dir))
    return result


def _move_paths(node, old: str | None, new: str) -> None:
    """Every string under the old run folder, in the evaluation keys, moved to the new one."""
    if not old or old == new:
        return
    for section in ("trainer", "callbacks", "logger"):
        if section in node and node[section] is not None:
            _replace_prefix(node[section], old, new)


def _replace_prefix(node, old: str, new: str) -> None:
    items = node.items() if OmegaConf.is_dict(node) else enumerate(node) if OmegaConf.is_list(node) else ()
    for key, value in list(items):
        if isinstance(value, str) and (value == old or value.startswith(old.rstrip("/") + "/")):
            node[key] = new + value[len(old):]
        elif OmegaConf.is_config(value):
            _replace_prefix(value, old, new)

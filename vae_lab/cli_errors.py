"""Hydra's and the operating system's errors as one line that says what to do (``python -m vae_lab``).

Hydra tells an unknown group option or key in several lines and suggests nothing; here the nearest valid
names are found (the options of ``conf/<group>/``, the keys of the config composed without the bad
override) and the message is one line. ``HYDRA_FULL_ERROR=1`` skips this and shows Hydra's own error.
"""
from __future__ import annotations

import difflib
import re
from pathlib import Path

from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf

CONF = Path(__file__).resolve().parent.parent / "conf"


def _nearest(word: str, choices: list[str], n: int = 3) -> list[str]:
    return difflib.get_close_matches(word, choices, n=n, cutoff=0.5)


def _suggestion(word: str, choices: list[str]) -> str:
    near = _nearest(word, choices)
    return f"did you mean {' or '.join(near)}?" if near else ""


def group_options(group: str) -> list[str]:
    folder = CONF / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def groups() -> list[str]:
    return sorted(str(p.relative_to(CONF)) for p in CONF.rglob("*") if p.is_dir() and any(p.glob("*.yaml")))


def _missing_option(error: MissingConfigException) -> str | None:
    missing = error.missing_cfg_file or ""
    if "/" not in missing:
        return None
    group, name = missing.rsplit("/", 1)
    options = list(error.options or group_options(group))
    if not options:
        hint = _suggestion(group, groups())
        return f"{group}={name}: there is no config group {group!r}" + (f"; {hint}" if hint else
                                                                         f" (groups: {', '.join(groups())})")
    hint = _suggestion(name, options)
    return (f"{group}={name}: no such option in conf/{group}/" + (f"; {hint}" if hint else "")
            + f" (options: {', '.join(options)})")


def _composed(argv: list[str], without: str) -> DictConfig | None:
    """The config the command line composes when the override of key ``without`` is left out (None when
    it still does not compose)."""
    from hydra import compose, initialize_config_dir

    kept = [a for a in argv if "=" in a and not a.startswith("-") and not a.lstrip("+~").startswith("hydra")
            and a.split("=", 1)[0].lstrip("+~") != without]
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("train", overrides=kept)
    except Exception:  # noqa: BLE001  (another bad override: the suggestion is then only the key's)
        return None


def _leaves(node, prefix: str = "") -> list[str]:
    keys = []
    for key, value in node.items_ex(resolve=False) if isinstance(node, DictConfig) else ():
        full = f"{prefix}{key}"
        keys.append(full)
        if isinstance(value, DictConfig):
            keys.extend(_leaves(value, f"{full}."))
    return keys


def _unknown_key(key: str, value: str, argv: list[str]) -> str:
    cfg = _composed(argv, key)
    message = f"{key}={value}: the config has no key {key!r}"
    if cfg is None:
        return message + "; to add a new key use +" + f"{key}={value}"
    parent, _, last = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
    near: list[str] = []
    if isinstance(node, DictConfig):
        near = [f"{parent}.{k}" if parent else k for k in _nearest(last, [str(k) for k in node.keys()])]
    if not near:  # the right name under another parent (lr= for optimizer.lr=)
        full = _leaves(cfg)
        by_last = {k.rsplit(".", 1)[-1]: k for k in full}
        near = [by_last[k] for k in _nearest(last, list(by_last))] or _nearest(key, full)
    hint = f"; did you mean {' or '.join(near)}?" if near else ""
    return message + hint + f" (to add a new key use +{key}={value})"


def one_line(error: BaseException, argv: list[str]) -> str | None:
    """The one-line message for ``error`` raised while composing or starting a run, or None when it is not
    one the user can act on (a bug: the traceback is shown)."""
    text = str(error)
    if isinstance(error, MissingConfigException):
        message = _missing_option(error)
        if message is not None:
            return message
    if isinstance(error, OverrideParseException):
        bad = re.search(r"override '(.*?)'", text)
        return (f"{bad.group(1) if bad else 'an override'}: Hydra cannot parse it; quote a value with "
                "spaces or brackets ('key=\"a b\"'); see https://hydra.cc/docs/advanced/override_grammar/basic")
    if isinstance(error, ConfigCompositionException):
        override = re.search(r"Could not override '([^']+)'", text)
        if override:
            key = override.group(1)
            value = next((a.split("=", 1)[1] for a in argv if a.split("=", 1)[0].lstrip("+~") == key and "=" in a), "")
            return _unknown_key(key, value, argv)
        present = re.search(r"An item is already at '([^']+)'", text)
        if present:
            return f"+{present.group(1)}: the key exists already; drop the + to change it"
    if isinstance(error, HydraException):
        return " ".join(text.split())
    if isinstance(error, OSError) and error.filename is not None:
        return (f"{error.filename}: cannot write it ({error.strerror}); give hydra.run.dir=<a writable folder>, "
                "or run where the current folder is writable")
    return None

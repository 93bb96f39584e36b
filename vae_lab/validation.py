"""The config's values, checked once before anything is built, from one declared table.

Each rule names a key, the kind of value it takes, its range and whether null is allowed; a key
that the composed config lacks (a family without ``model.latent_dim``) is skipped. Groups and
unknown keys are checked by Hydra itself; values that only a part understands (a tense name, a
file) are checked by the part, with the same one-line ``ConfigError``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from vae_lab.errors import ConfigError
from vae_lab.regularisers import REGULARISERS, missing_methods

CONF = Path(__file__).resolve().parent.parent / "conf"


@dataclass(frozen=True)
class Rule:
    key: str
    kind: type  # int or float (an int is a valid float)
    minimum: float | None = None
    exclusive: bool = False  # minimum < value instead of minimum <= value
    nullable: bool = False
    meaning: str = ""
    words: tuple[str, ...] = ()  # strings allowed besides numbers (torch_threads=auto)

    def check(self, value) -> None:
        if isinstance(value, str) and value in self.words:
            return
        if value is None:
            if self.nullable:
                return
            raise ConfigError(f"{self.key}=null: give {self._expected()}")
        ok_type = (isinstance(value, int) and not isinstance(value, bool)) if self.kind is int else (
            isinstance(value, (int, float)) and not isinstance(value, bool))
        below = ok_type and self.minimum is not None and (
            value <= self.minimum if self.exclusive else value < self.minimum)
        if not ok_type or below:
            raise ConfigError(f"{self.key}={value}: give {self._expected()}")

    def _expected(self) -> str:
        kind = "an integer" if self.kind is int else "a number"
        bound = "" if self.minimum is None else f" {'>' if self.exclusive else '>='} {self.minimum:g}"
        null = ", or null" if self.nullable else ""
        words = "".join(f", or {word}" for word in self.words)
        return f"{kind}{bound}{words}{null}" + (f" ({self.meaning})" if self.meaning else "")


RULES = (
    Rule("k", int, 1, meaning="posterior samples per example in training"),
    Rule("seed", int, 0),
    Rule("torch_threads", int, 1, nullable=True, words=("auto",),
         meaning="auto: the cores the machine's load leaves free; null: torch's default, one per core"),
    Rule("optimizer.lr", float, 0, exclusive=True, meaning="the learning rate"),
    Rule("objective.free_bits", float, 0, meaning="nats"),
    Rule("objective.autoencoder_steps", int, 0, meaning="steps of autoencoder pretraining; 0: none"),
    Rule("trainer.max_epochs", int, -1, meaning="-1: no limit"),
    Rule("trainer.max_steps", int, -1, meaning="-1: no limit"),
    Rule("trainer.check_val_every_n_epoch", int, 1, nullable=True),
    Rule("dataset.batch_size", int, 1),
    Rule("dataset.eval_batch_size", int, 1),
    Rule("dataset.limit", int, 1, nullable=True, meaning="the first N examples of each split; null: all"),
    Rule("dataset.num_workers", int, 0),
    Rule("model.latent_dim", int, 1),
    Rule("model.hidden_dim", int, 1),
    Rule("model.embedding_dim", int, 1),
    Rule("model.struct.group_size", int, 1),
    Rule("eval.val_samples", int, 1),
    Rule("eval.test_samples", int, 1),
    Rule("eval.chunk_size", int, 1),
    Rule("eval.chunk_units", int, 1, nullable=True, meaning="predicted tokens per decoder pass; null: chunk_size"),
    Rule("eval.num_samples", int, 0),
    Rule("beta", float, 0, exclusive=True, nullable=True, meaning="the smoothing sharpness; null: published"),
    Rule("num_samples", int, 1, nullable=True, meaning="mode=sample; null: eval.num_samples"),
    Rule("steps", int, 0, nullable=True, meaning="mode=interpolate: points between the sentences"),
)


def check_values(cfg: DictConfig, rules: tuple[Rule, ...] = RULES) -> None:
    """Apply every rule whose key the config has (interpolations resolved)."""
    for rule in rules:
        node = OmegaConf.select(cfg, rule.key, default="__absent__", throw_on_missing=False)
        if isinstance(node, str) and node == "__absent__":
            continue
        rule.check(node)


# ---------------------------------------------------------------------------- model × dataset

def _chosen(group: str, node) -> str:
    """The option of ``group`` the run chose (Hydra's choice when a Hydra run composed it), else its class."""
    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get(group)
        if choice:
            return str(choice)
    return str(node.get("_target_")).rsplit(".", 1)[-1]


def check_data(cfg: DictConfig) -> None:
    """The family reads the kind of batch the datamodule yields (``LatentVariableModel.reads`` and
    ``SplitDataModule.batch_kind``); else one line naming the datasets that yield what it reads."""
    if "model" not in cfg or "dataset" not in cfg:
        return
    reads = get_class(cfg.model._target_).reads
    yields = get_class(cfg.dataset._target_).batch_kind
    if reads == yields:
        return
    options = [name for name in _options("dataset") if get_class(_target_of("dataset", name)).batch_kind == reads]
    fix = f"use dataset={'|'.join(options)}" if options else "no dataset of conf/dataset/ yields them"
    raise ConfigError(f"model={_chosen('model', cfg.model)} reads {reads} batches, but dataset="
                      f"{_chosen('dataset', cfg.dataset)} yields {yields or 'undeclared'} batches: {fix}")


# ---------------------------------------------------------------------------- posterior × prior

def _load_option(group: str, path: Path) -> DictConfig:
    """One option of a group, unresolved; of an option written at the top level (``# @package _global_``,
    e.g. a posterior that also sets its loss weights), its node under the group's key."""
    node = OmegaConf.load(path)
    if path.read_text().lstrip().startswith("# @package _global_") and group.split("/")[-1] in node:
        return node[group.split("/")[-1]]
    return node


def _options(group: str) -> dict[str, DictConfig]:
    """The configs of a group (``conf/<group>/*.yaml``) by name, unresolved."""
    return {path.stem: _load_option(group, path) for path in sorted((CONF / group).glob("*.yaml"))}


def _target_of(group: str, name: str) -> str:
    """The ``_target_`` of an option of ``group``, through the options of the group it extends (``defaults:``)."""
    option = _load_option(group, CONF / group / f"{name}.yaml")
    if "_target_" in option:
        return option._target_
    bases = [entry for entry in option.get("defaults", []) if isinstance(entry, str) and entry != "_self_"]
    if not bases:
        raise ConfigError(f"{group}={name}: conf/{group}/{name}.yaml names no _target_")
    return _target_of(group, bases[0])


def _targets(node) -> tuple:
    return (node.get("_target_"), OmegaConf.select(node, "smoothing._target_", default=None))


def _name(group: str, node) -> str:
    """The option of ``group`` whose targets ``node`` has (its class name when none has them)."""
    found = [name for name, option in _options(group).items() if _targets(option) == _targets(node)]
    return found[0] if found else str(node.get("_target_")).rsplit(".", 1)[-1]


def _row(posterior, relaxation=None) -> str:
    """The regulariser-table row of a posterior config and its relaxation's (``BernoulliPosterior.row``
    of the built parts): the posterior's kind, then the relaxation's family."""
    kind = get_class(posterior._target_).kind
    return kind if relaxation is None else f"{kind}/{get_class(relaxation._target_).family}"


def _rows(option: DictConfig) -> dict[str, str | None]:
    """Regulariser-table rows of a posterior option, with the relaxation option each comes from."""
    if not any("relaxation" in str(entry) for entry in option.get("defaults", [])):
        return {_row(option): None}
    return {_row(option, relaxation): name for name, relaxation in _options("posterior/relaxation").items()}


def working_pairs() -> str:
    """The (posterior, prior) pairs of conf/ that have a regulariser, in one line, in config terms."""
    supports: dict[str, list[str]] = {}
    for name, option in _options("prior").items():
        supports.setdefault(get_class(option._target_).support, []).append(name)
    pairs = []
    for posterior, option in _options("posterior").items():
        for support, priors in supports.items():
            bounds = {relaxation: set(REGULARISERS[(row, support)])
                      for row, relaxation in _rows(option).items() if (row, support) in REGULARISERS}
            if not bounds:
                continue
            every = set().union(*bounds.values())
            notes = [f"posterior/relaxation={relaxation}: objective.bound={'|'.join(sorted(b))} only"
                     for relaxation, b in bounds.items() if b != every]
            missing = [relaxation for relaxation in _rows(option).values()
                       if relaxation is not None and relaxation not in bounds]
            notes += [f"not posterior/relaxation={relaxation}" for relaxation in missing]
            note = f" ({'; '.join(notes)})" if notes else ""
            pairs.append(f"posterior={posterior} with prior={'|'.join(priors)}{note}")
    return "; ".join(pairs)


def check_parts(cfg: DictConfig) -> None:
    """The (posterior, prior) pair has a regulariser under ``objective.bound`` (vae_lab/regularisers.py),
    the prior offers the methods that regulariser calls, and the model gives the hooks the prior requires;
    else one line that says so (for a pair without a regulariser: the pairs that work). Checked from the
    classes the config names, before anything is built."""
    if "posterior" not in cfg or "prior" not in cfg:
        return
    relaxation = cfg.posterior.get("relaxation")
    row = _row(cfg.posterior, relaxation)
    prior_class = get_class(cfg.prior._target_)
    support, bound = prior_class.support, cfg.objective.bound
    cell = REGULARISERS.get((row, support), {}).get(bound)
    if cell is None:
        chosen = f"posterior={_name('posterior', cfg.posterior)}"
        if relaxation is not None:
            chosen += f" posterior/relaxation={_name('posterior/relaxation', relaxation)}"
        raise ConfigError(f"{chosen} with prior={_name('prior', cfg.prior)} and objective.bound={bound}: this pair "
                          f"has no regulariser; the pairs that work: {working_pairs()}")
    missing = missing_methods(cell, prior_class)
    if missing:
        raise ConfigError(f"prior={_name('prior', cfg.prior)} does not offer {', '.join(missing)}, which the "
                          f"{row} × {support} regulariser ({cell.__name__}) calls: add them to "
                          f"{prior_class.__name__} and its `offers`, or use another prior")
    if "model" in cfg:
        missing_hooks = sorted(prior_class.requires - get_class(cfg.model._target_).offers)
        if missing_hooks:
            raise ConfigError(f"prior={_name('prior', cfg.prior)} needs the model to give {', '.join(missing_hooks)}, "
                              f"which model={_chosen('model', cfg.model)} does not; use another prior")

"""What the tests run, found from the declarations, never from a hand-kept table: every conf/model option
with every conf/dataset option that yields the batch kind its family reads (``LatentVariableModel.reads``,
``SplitDataModule.batch_kind``), and one representative of each family. A new family is a models/ file
and a conf/model/ file: these find it."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from hydra.utils import get_class

from tests.conftest import CONF_DIR, compose_config


def options(group: str, conf_dir: str = CONF_DIR) -> list[str]:
    return sorted(p.stem for p in Path(conf_dir, group).glob("*.yaml"))


@lru_cache(maxsize=None)
def composed_model(model: str, conf_dir: str = CONF_DIR):
    """``model=<option>`` composed (an image model's config picks its dataset, posterior and prior)."""
    return compose_config([f"model={model}"], Path("/tmp/unused"), conf_dir)


def model_reads(model: str, conf_dir: str = CONF_DIR) -> str:
    return get_class(composed_model(model, conf_dir).model._target_).reads


@lru_cache(maxsize=None)
def dataset_target(dataset: str, conf_dir: str = CONF_DIR) -> str:
    return compose_config([f"dataset={dataset}"], Path("/tmp/unused"), conf_dir).dataset._target_


def dataset_yields(dataset: str, conf_dir: str = CONF_DIR) -> str:
    return get_class(dataset_target(dataset, conf_dir)).batch_kind


def model_dataset_cases(conf_dir: str = CONF_DIR) -> list[tuple[str, str]]:
    """Every (model, dataset) pair of conf/ whose batch kinds match."""
    datasets = {dataset: dataset_yields(dataset, conf_dir) for dataset in options("dataset", conf_dir)}
    return [(model, dataset) for model in options("model", conf_dir) for dataset, kind in datasets.items()
            if kind == model_reads(model, conf_dir)]


def family_representatives(conf_dir: str = CONF_DIR) -> dict[str, tuple[str, str]]:
    """One (model, dataset) per family class: the first model option whose composed posterior is the
    Gaussian one (a family's baseline, where the posterior and prior groups can be swapped freely), else
    the first; with the dataset its composed config picks when that one matches, else the first that does."""
    chosen: dict[str, tuple[str, str]] = {}
    for model, dataset in model_dataset_cases(conf_dir):
        cfg = composed_model(model, conf_dir)
        family = cfg.model._target_
        gaussian = cfg.posterior._target_.endswith("GaussianPosterior")
        own = dataset_target(dataset, conf_dir) == cfg.dataset._target_
        rank = (not gaussian, not own)
        if family not in chosen or rank < chosen[family][0]:
            chosen[family] = (rank, (model, dataset))
    return {family: case for family, (_, case) in chosen.items()}

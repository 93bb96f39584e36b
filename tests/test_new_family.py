"""Adding a family is a models/ file and a conf/model/ file: the test discovery finds it and it trains under
debug=fast with nothing else edited (issue 24).

The toy family lives in a temporary package (``toyfam``, on sys.path) with its config in a copy of
``conf/``; nothing of the project is changed. It is a family of its own class (a subclass of the image
family with a different name and a decoder of its own), so discovery has to see a new family, not a new
option of a known one.

Restoring it (``mode=test``) is another matter: a checkpoint's stored config may only name targets under
``vae_lab.`` (``TRUSTED_TARGETS``, vae_lab/checkpoints.py; no config key or environment variable widens it), so
an out-of-tree family trains but its checkpoint is refused. A family the way the promise says, a module of
``vae_lab/models/``, restores: the last test puts the same toy file on the ``vae_lab.models`` package path
(a temporary folder appended to ``vae_lab.models.__path__``, the checkout untouched), as
``vae_lab.models.toy_vae``.
"""
from __future__ import annotations

import json
import math
import shutil
import sys
import textwrap
from pathlib import Path

import pytest
from hydra.utils import get_class

import vae_lab.models
import vae_lab.validation
from tests.conftest import CONF_DIR, compose_config
from tests.discovery import composed_model, dataset_target, family_representatives, model_dataset_cases
from vae_lab.errors import ConfigError
from vae_lab.train import run

FAMILY = '''
"""A toy family: the image family's encoder with a one-layer decoder of its own, no weight decay."""
from torch import nn

from vae_lab.models.image_vae import ImageVAE


class ToyVAE(ImageVAE):
    reads = "images"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.decoder = nn.Linear(self.num_latents, self.num_pixels)

    def decoder_modules(self):
        return [self.decoder]

    def regularizer(self):
        return 0.0  # no weight decay on the toy decoder
'''

CONFIG = '''
# @package _global_
# a toy family (tests/test_new_family.py)
defaults:
  - /recipe@_global_: dvae_training
  - override /dataset: binarized_mnist
  - override /posterior: gaussian
  - override /prior: normal
  - override /struct: 1-layer-lin
  - override /annealing: warmup
  - _self_
model:
  _target_: toyfam.toy_vae.ToyVAE
  name: toy_vae
objective:
  bound: elbo
'''


@pytest.fixture
def toy_conf(tmp_path, monkeypatch):
    """conf/ copied with conf/model/toy_vae.yaml added; the toy package importable; the validation reads
    the copy."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "model" / "toy_vae.yaml").write_text(textwrap.dedent(CONFIG).lstrip())
    package = tmp_path / "packages" / "toyfam"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "toy_vae.py").write_text(textwrap.dedent(FAMILY).lstrip())
    monkeypatch.syspath_prepend(str(tmp_path / "packages"))
    monkeypatch.setattr(vae_lab.validation, "CONF", conf)
    for cached in (composed_model, dataset_target):
        cached.cache_clear()
    yield str(conf)
    for cached in (composed_model, dataset_target):
        cached.cache_clear()


def test_the_discovery_finds_a_new_family_from_its_two_files(toy_conf):
    cases = model_dataset_cases(conf_dir=toy_conf)
    image_datasets = sorted(d for m, d in cases if m == "vae_mlp")
    assert image_datasets and sorted(d for m, d in cases if m == "toy_vae") == image_datasets
    assert ("toy_vae", "ptb") not in cases  # it reads images, not sentences
    representatives = family_representatives(conf_dir=toy_conf)
    assert representatives["toyfam.toy_vae.ToyVAE"] == ("toy_vae", "binarized_mnist")
    assert get_class("toyfam.toy_vae.ToyVAE").reads == "images"
    assert "toy_vae" not in {m for m, _ in model_dataset_cases()}  # the project's own conf/ is untouched


def test_a_new_family_trains_and_tests_under_debug_fast(toy_conf, tmp_path):
    cfg = compose_config(["model=toy_vae", "dataset=binarized_mnist", "debug=fast", "logger=none"], tmp_path / "run",
                         toy_conf)
    run(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("train/elbo", "train/kl", "val/nll", "test/nll", "test/elbo", "test/rec", "test/kl",
                "test/active_units"):
        assert math.isfinite(metrics[key]), key
    assert (tmp_path / "run" / "samples.png").is_file()
    # its checkpoint is refused on restore: the stored model._target_ is outside TRUSTED_TARGETS
    tested = compose_config(["mode=test", f"run_dir={tmp_path / 'run'}", "debug=fast"], tmp_path / "tested", toy_conf)
    with pytest.raises(ConfigError, match=r"model\._target_=toyfam\.toy_vae\.ToyVAE, outside vae_lab\."):
        run(tested)


@pytest.fixture
def forget_toy_module():
    """The module vae_lab.models.toy_vae imported by a test, dropped after it (its file is temporary)."""
    yield
    sys.modules.pop("vae_lab.models.toy_vae", None)
    vars(vae_lab.models).pop("toy_vae", None)


def test_a_new_family_in_vae_lab_models_trains_and_restores(toy_conf, tmp_path, monkeypatch, forget_toy_module):
    """The same toy as the module ``vae_lab.models.toy_vae`` (models/toy_vae.py, on the package's path)
    with conf/model/toy_vae.yaml naming it: it trains, and mode=test restores its best checkpoint and
    gives the end-of-training test metrics."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "toy_vae.py").write_text(textwrap.dedent(FAMILY).lstrip())
    monkeypatch.setattr(vae_lab.models, "__path__", [*vae_lab.models.__path__, str(models)])
    config = Path(toy_conf) / "model" / "toy_vae.yaml"
    config.write_text(config.read_text().replace("toyfam.toy_vae.ToyVAE", "vae_lab.models.toy_vae.ToyVAE"))
    assert family_representatives(conf_dir=toy_conf)["vae_lab.models.toy_vae.ToyVAE"] == ("toy_vae", "binarized_mnist")
    cfg = compose_config(["model=toy_vae", "dataset=binarized_mnist", "debug=fast", "trainer.limit_train_batches=2",
                          "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"], tmp_path / "run", toy_conf)
    run(cfg)
    trained = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"train/elbo", "val/nll", "test/nll"} <= set(trained)
    assert all(math.isfinite(value) for value in trained.values())
    tested = compose_config(["mode=test", f"run_dir={tmp_path / 'run'}", "debug=fast", "trainer.limit_test_batches=1"],
                            tmp_path / "tested", toy_conf)
    run(tested)
    restored = json.loads((tmp_path / "tested" / "metrics.json").read_text())
    for key, value in trained.items():
        if key.startswith("test/"):
            assert restored[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key

"""Adding a family is a models/ file and a conf/model/ file: the test discovery finds it and it trains under
debug=fast with nothing else edited (issue 24).

The toy family lives in a temporary package (``toyfam``, on sys.path) with its config in a copy of
``conf/``; nothing of the project is changed. It is a family of its own class (a subclass of the image
family with a different name and a decoder of its own), so discovery has to see a new family, not a new
option of a known one.
"""
from __future__ import annotations

import json
import math
import shutil
import textwrap
from pathlib import Path

import pytest
from hydra.utils import get_class

import vae_lab.validation
from tests.conftest import CONF_DIR, compose_config
from tests.discovery import composed_model, dataset_target, family_representatives, model_dataset_cases
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

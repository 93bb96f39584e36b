"""Checkpoints written before issue 24's refactor (tests/golden/before_issue24/: the best.ckpt of a
debug=fast run of the code at b7b713e, optimizer state dropped) restore, and their test metrics are the
ones that code measured: the CVAE's own LSTMs become nets/rnn.py's encoder and decoder under new names,
the same weights and maths; the image model's dataset config (``source: mnist``) becomes its reader."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from vae_lab.train import run

BEFORE = Path(__file__).parent / "golden" / "before_issue24"


@pytest.mark.parametrize("name", ["cvae", "vae_mlp"])
def test_a_checkpoint_from_before_the_refactor_tests_to_the_digit(make_config, name):
    """No override but the checkpoint: it carries its experiment (model, data, evaluation settings)."""
    cfg = make_config(["mode=test", f"ckpt={BEFORE / f'{name}.ckpt'}", "torch_threads=1"])
    run(cfg)
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    before = json.loads((BEFORE / f"{name}.metrics.json").read_text())
    assert sorted(k for k in metrics if k.startswith("test/")) == sorted(before)
    for key, value in before.items():
        assert metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key

"""One fast run generated for every conf/model/*.yaml with each dataset its family reads (found by
composing the model config, not from a hand-kept table): train, validate, test; finite metrics under
the shared keys, and the outputs of the family's kind."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.conftest import CONF_DIR, compose_config
from vae_lab.train import run

TEXT, TENSE, IMAGES = ("ptb", "text_files"), ("verb_tense",), ("binarized_mnist", "dynamic_mnist", "omniglot")
SHIPPED = {"ptb", "verb_tense", "binarized_mnist", "dynamic_mnist"}  # data that needs no dataset.path


def datasets_of(model: str) -> tuple[str, ...]:
    """The datasets whose batches the model's class reads, by its target's module."""
    target = compose_config([f"model={model}"], Path("/tmp")).model._target_
    kind = {"sentence_vae": TEXT, "cvae": TENSE, "image_vae": IMAGES}[target.split(".")[-2]]
    return tuple(d for d in kind if d in SHIPPED)


CASES = [(m, d) for m in sorted(p.stem for p in Path(CONF_DIR, "model").glob("*.yaml")) for d in datasets_of(m)]


@pytest.mark.parametrize("model,dataset", CASES)
def test_every_model_trains_and_tests_under_debug_fast(make_config, model, dataset):
    cfg = make_config([f"model={model}", f"dataset={dataset}", "debug=fast", "trainer.limit_train_batches=2",
                       "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "eval.num_samples=2"])
    run(cfg)
    folder = Path(cfg.paths.output_dir)
    metrics = json.loads((folder / "metrics.json").read_text())
    for key in ("train/elbo", "train/rec", "train/kl", "train/bound", "val/nll", "test/nll", "test/elbo",
                "test/rec", "test/kl", "test/active_units"):
        assert math.isfinite(metrics[key]), key
    # the NLL estimate is a bound at least as tight as the ELBO (both per example, in nats)
    assert metrics["test/nll"] <= -metrics["test/elbo"] + 1e-3
    assert metrics["test/rec"] > 0 and metrics["test/kl"] > 0
    image = dataset in IMAGES
    assert (folder / ("samples.png" if image else "samples.txt")).is_file()
    assert ("test/ppl" in metrics) != image  # perplexity only where units are counted
    if cfg.get("sampler"):
        assert abs(metrics["test/log_z"]) < 1e4 and metrics["test/log_z_std_err"] >= 0

"""One fast run generated for every conf/model/*.yaml with each dataset its family reads (found by
composing the model config, not from a hand-kept table): train, validate, test; finite metrics under
the shared keys, and the outputs of the family's kind."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

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
    # the 5-draw IW estimate and the 1-draw ELBO estimate the same kind of bound (fixed seeds)
    assert metrics["test/nll"] <= -metrics["test/elbo"] + 1.0
    assert metrics["test/rec"] > 0 and metrics["test/kl"] > 0
    image = dataset in IMAGES
    assert (folder / ("samples.png" if image else "samples.txt")).is_file()
    assert ("test/ppl" in metrics) != image  # perplexity only where units are counted
    if cfg.get("sampler"):
        assert abs(metrics["test/log_z"]) < 1e4 and metrics["test/log_z_std_err"] >= 0


IMAGE_MODELS = [m for m, d in CASES if d == "binarized_mnist"]
STRUCTS = sorted(p.stem for p in Path(CONF_DIR, "struct").glob("*.yaml"))


@pytest.mark.parametrize("struct", STRUCTS)
@pytest.mark.parametrize("model", IMAGE_MODELS)
def test_every_image_model_and_struct_takes_a_training_step(make_config, model, struct):
    """Each model × struct composes, builds, and one k = 3 training step gives finite gradients
    everywhere (the encoder of the last group included)."""
    from vae_lab.objectives import training_objective
    from vae_lab.train import build_datamodule, build_module

    cfg = make_config([f"model={model}", f"struct={struct}", "debug=fast", "k=3"])
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule).train()
    weights = module.model.log_weights(next(iter(datamodule.train_dataloader())), 3)
    out = training_objective(weights, 0.5, bound=cfg.objective.bound)
    assert torch.isfinite(out.loss) and weights.log_likelihood.shape == (3, cfg.dataset.batch_size)
    (out.loss + module.model.regularizer()).backward()
    groups = cfg.model.struct.num_groups
    assert len(module.model.encoders) == groups
    grads = [p.grad for p in module.model.encoders[-1].parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("prior", ["mixture", "aggregate"])
def test_the_sentence_vae_takes_the_learned_and_the_aggregate_prior(make_config, prior):
    """The prior is a part: the sentence VAE trains with any Gaussian-latent prior of conf/prior/."""
    cfg = make_config(["debug=fast", f"prior={prior}", "prior.components=16", "trainer.limit_train_batches=2",
                       "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"])
    run(cfg)
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert math.isfinite(metrics["test/nll"]) and metrics["test/kl"] > 0
    assert len((Path(cfg.paths.output_dir) / "samples.txt").read_text().splitlines()) == 3

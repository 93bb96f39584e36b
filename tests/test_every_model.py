"""One fast run generated for every conf/model/*.yaml with each dataset its family reads (found from the
declared batch kinds, tests/discovery.py): train, validate, test; finite metrics under the shared keys,
the outputs of the family's kind, and the metrics of the code before issue 24's refactor to the digit
(tests/golden/debug_fast.json, written by tests/golden/make_golden.py at b7b713e; the CVAE's entry was
rewritten with issue 24, whose CVAE has nets/rnn.py's nets and an epoch-seeded, sharded training order)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.conftest import CONF_DIR
from tests.discovery import model_dataset_cases
from tests.golden.make_golden import golden_overrides
from vae_lab.errors import ConfigError
from vae_lab.train import build_datamodule, run

CASES = model_dataset_cases()
GOLDEN = json.loads((Path(__file__).parent / "golden" / "debug_fast.json").read_text())


def needs_files(cfg) -> str | None:
    """Why the dataset cannot be built here (a dataset that reads the user's files: dataset.path), or None."""
    try:
        build_datamodule(cfg)
    except ConfigError as error:
        if "dataset.path" in str(error):
            return str(error)
        raise
    return None


@pytest.mark.parametrize("model,dataset", CASES)
def test_every_model_trains_and_tests_under_debug_fast(make_config, model, dataset):
    cfg = make_config(golden_overrides(model, dataset))
    reason = needs_files(cfg)
    if reason:
        pytest.skip(f"dataset={dataset} reads files that are not shipped: {reason}")
    run(cfg)
    folder = Path(cfg.paths.output_dir)
    metrics = json.loads((folder / "metrics.json").read_text())
    for key in ("train/elbo", "train/rec", "train/kl", "train/bound", "val/nll", "test/nll", "test/elbo",
                "test/rec", "test/kl", "test/active_units"):
        assert math.isfinite(metrics[key]), key
    # the 5-draw IW estimate and the 1-draw ELBO estimate the same kind of bound (fixed seeds)
    assert metrics["test/nll"] <= -metrics["test/elbo"] + 1.0
    assert metrics["test/rec"] > 0 and metrics["test/kl"] >= 0
    image = "pixels" in next(iter(build_datamodule(cfg).test_dataloader()))
    assert (folder / ("samples.png" if image else "samples.txt")).is_file()
    assert ("test/ppl" in metrics) != image  # perplexity only where units are counted
    if cfg.get("sampler"):
        assert abs(metrics["test/log_z"]) < 1e4 and metrics["test/log_z_std_err"] >= 0
    golden = GOLDEN.get(f"{model}:{dataset}")
    if golden is not None:  # the same numbers as before the refactor (another CPU may round differently)
        assert {key for key in metrics if not key.startswith("data/")} == set(golden)  # data/: counted since
        for key, value in golden.items():
            assert metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


IMAGE_MODELS = [m for m, d in CASES if d == "binarized_mnist"]  # every model of the image family
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

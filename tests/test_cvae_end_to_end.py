"""The verb-tense CVAE through the real entry points: train, test, convert, sample."""
import json
from pathlib import Path

import pytest

from vae_lab.errors import ConfigError
from vae_lab.train import run

FAST = ["experiment=verb_tense", "debug=fast", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
        "trainer.check_val_every_n_epoch=1", "eval.test_samples=2", "eval.num_samples=2", "model.gaussian_samples=5",
        "torch_threads=1", "prior=aggregate", "prior.components=64"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tests.conftest import compose_config

    run_dir = tmp_path_factory.mktemp("cvae")
    run(compose_config(FAST, run_dir))
    return run_dir


def test_train_writes_the_shared_and_the_tense_metrics(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    for stage in ("val", "test"):
        for key in ("bleu", "exact_match", "gaussian_score", "gaussian_score_normal"):
            assert 0.0 <= metrics[f"{stage}/{key}"] <= 1.0, key
        assert metrics[f"{stage}/elbo"] == pytest.approx(-metrics[f"{stage}/rec"] - metrics[f"{stage}/kl"], abs=1e-4)
        # the KL under the fitted aggregate prior is a one-draw Monte Carlo estimate of a KL near 0 this early
        assert metrics[f"{stage}/rec"] > 0 and metrics[f"{stage}/kl"] > -0.1
        assert metrics[f"{stage}/nll"] == pytest.approx(-metrics[f"{stage}/elbo"], rel=0.2)  # 2 IW draws ~ the ELBO
    assert metrics["train/kl_weight"] == pytest.approx(0.0, abs=0.01)  # cyclical annealing, a few steps in
    assert len((trained / "samples.txt").read_text().splitlines()) == 2


def test_convert_mode(trained, make_config, capsys, tmp_path):
    run(make_config([*FAST, "mode=convert", f"run_dir={trained}", "word=abandon", "source=sp", "target=p"],
                    "convert"))
    assert "abandon (sp) -> " in capsys.readouterr().out
    words = tmp_path / "words.txt"
    words.write_text("abandon sp p\ngo p pg\n")
    cfg = make_config([*FAST, "mode=convert", f"run_dir={trained}", f"words_file={words}"], "convert_file")
    run(cfg)
    assert len((Path(cfg.paths.output_dir) / "conversions.txt").read_text().splitlines()) == 2
    with pytest.raises(ConfigError, match="target"):
        run(make_config([*FAST, "mode=convert", f"run_dir={trained}", "word=go", "source=sp", "target=future"],
                        "bad_tense"))
    with pytest.raises(ConfigError, match="a-z"):
        run(make_config([*FAST, "mode=convert", f"run_dir={trained}", "word=Go1", "source=sp", "target=p"],
                        "bad_word"))

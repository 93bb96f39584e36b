"""DDP on CPU: two gloo processes train, validate and test over the whole splits, and the test metrics
are those of a one-process evaluation of the same checkpoint."""
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate

from tests.conftest import compose_config

ROOT = Path(__file__).resolve().parents[1]
# 191 sentences a split: 12 training batches of at most 16 (6 a rank; the bucket sampler gives every
# rank the same number of batches, so a 13th would be dropped) and 96 + 95 evaluation examples (every
# example once: the odd split is not padded with a repeat)
SPLIT = ("debug=fast", "dataset.limit=191", "trainer.limit_train_batches=null", "trainer.limit_val_batches=null",
         "trainer.limit_test_batches=null", "torch_threads=1")
# the same numbers from the same weights and examples, whatever the ranks (BLEU: greedy decodings
# of the posterior means; active units: the means' covariance; the counts)
EXACT = ("examples", "units", "active_units", "bleu")
# Monte Carlo: DDP draws each rank's examples from its own random stream, so the two evaluations use
# independent draws. Eight one-process evaluations of this checkpoint with seeds 1-8 gave standard
# deviations of 0.02 (elbo, rec, nll at 5 importance samples) and 0.04 nats (bound); two independent
# estimates differ by sqrt(2) of that, and 0.3 nats is above 5 standard deviations of the difference.
# The KL term is closed-form: only float32 rounding (other batch compositions) moves it. Not compared:
# test/mi, one draw an example from a generator seeded 0 in the order the posteriors were gathered
# (rank by rank under DDP); its Monte Carlo spread here is 0.03 nats on 0.13.
NATS = {"elbo": 0.3, "rec": 0.3, "bound": 0.3, "nll": 0.3, "kl": 1e-5}


def vae_lab(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "vae_lab", *args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def whole_splits() -> dict[str, tuple[int, int]]:
    """(sentences, predicted tokens incl. <eos>) of each split, read from the data module itself."""
    cfg = compose_config(list(SPLIT), Path("unused"))
    datamodule = instantiate(cfg.dataset, data_dir=cfg.paths.data_dir, _recursive_=False)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return {stage: (len(dataset.ids), sum(len(ids) + 1 for ids in dataset.ids))
            for stage, dataset in (("train", datamodule.datasets["train"]), ("val", datamodule.datasets["valid"]),
                                   ("test", datamodule.datasets["test"]))}


def test_ddp_counts_whole_splits_and_tests_like_one_process(tmp_path):
    run_dir, evaluation = tmp_path / "ddp", tmp_path / "one_process"
    trained = vae_lab(*SPLIT, "logger=csv", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                      f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert "MEMBER: 2/2" in trained.stderr + trained.stdout  # two processes
    assert "sync_dist=True" not in trained.stderr  # Lightning sees the epoch metrics as synced
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for stage, (examples, tokens) in whole_splits().items():
        assert (metrics[f"{stage}/examples"], metrics[f"{stage}/units"]) == (examples, tokens), stage
    with open(run_dir / "csv" / "version_0" / "metrics.csv") as rows:  # what the logger got from rank 0
        logged = [row for row in csv.DictReader(rows) if row["test/examples"]]
    assert float(logged[-1]["test/examples"]) == metrics["test/examples"]
    assert float(logged[-1]["test/nll"]) == pytest.approx(metrics["test/nll"], rel=1e-6)

    vae_lab(*SPLIT, "logger=none", "mode=test", f"run_dir={run_dir}", "ckpt=best", f"hydra.run.dir={evaluation}",
            cwd=tmp_path)
    one_process = json.loads((evaluation / "metrics.json").read_text())
    for name in EXACT:
        assert metrics[f"test/{name}"] == one_process[f"test/{name}"], name
    for name, nats in NATS.items():
        assert metrics[f"test/{name}"] == pytest.approx(one_process[f"test/{name}"], abs=nats), name
    # perplexities: exp(nats · examples / tokens), so 0.3 nats an example is a factor exp(0.3 · 191 / tokens)
    tokens = one_process["test/units"]
    for name in ("ppl", "rec_ppl"):
        assert metrics[f"test/{name}"] == pytest.approx(one_process[f"test/{name}"], rel=math.expm1(0.3 * 191 / tokens)), name


# the CVAE: 20 verbs a split (80 training forms: 40 a rank, every one seen; 240 conversion pairs a split)
CVAE_SPLIT = ("debug=fast", "model=cvae", "dataset=verb_tense", "dataset.limit=20", "trainer.limit_train_batches=null",
              "trainer.limit_val_batches=null", "trainer.limit_test_batches=null", "torch_threads=1")


def verb_tense_splits() -> dict[str, tuple[int, int]]:
    """(items, predicted characters incl. <eos>) of each split: training forms, then conversion pairs."""
    cfg = compose_config(list(CVAE_SPLIT), Path("unused"))
    datamodule = instantiate(cfg.dataset, data_dir=cfg.paths.data_dir)
    datamodule.setup("fit")
    forms = [form for verb in datamodule.train_verbs for form in verb]
    splits = {"train": (len(forms), sum(len(form) + 1 for form in forms))}
    for stage, pairs in (("val", datamodule.val_pairs), ("test", datamodule.test_pairs)):
        splits[stage] = (len(pairs), sum(len(target) + 1 for _, _, target, _ in pairs))
    return splits


def test_the_cvae_is_data_parallel_and_tests_like_one_process(tmp_path):
    """Under trainer=ddp each rank trains on its own half of the forms (every form once an epoch) and
    evaluates its own share of the pairs: the counts are the data's, not twice them; the greedy decodings'
    BLEU and exact match equal a one-process test of the same checkpoint."""
    run_dir, evaluation = tmp_path / "ddp", tmp_path / "one_process"
    trained = vae_lab(*CVAE_SPLIT, "logger=csv", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                      f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert "MEMBER: 2/2" in trained.stderr + trained.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for stage, (items, characters) in verb_tense_splits().items():
        assert (metrics[f"{stage}/examples"], metrics[f"{stage}/units"]) == (items, characters), stage
    vae_lab(*CVAE_SPLIT, "logger=none", "mode=test", f"run_dir={run_dir}", "ckpt=best", f"hydra.run.dir={evaluation}",
            cwd=tmp_path)
    one_process = json.loads((evaluation / "metrics.json").read_text())
    for name in ("examples", "units", "bleu", "exact_match", "active_units", "gaussian_score", "gaussian_score_normal"):
        assert metrics[f"test/{name}"] == one_process[f"test/{name}"], name
    assert metrics["test/kl"] == pytest.approx(one_process["test/kl"], abs=1e-4)  # closed form: rounding only

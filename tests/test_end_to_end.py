"""debug=fast runs of the real entry points on the real PTB: seconds each."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vae_lab.errors import ConfigError
from vae_lab.module import NonFiniteLossError
from vae_lab.train import run

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"elbo", "rec", "kl", "nll", "ppl", "rec_ppl", "active_units", "mi", "bleu"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One debug=fast training run shared by the restore tests."""
    from tests.conftest import compose_config

    run_dir = tmp_path_factory.mktemp("train")
    cfg = compose_config(["debug=fast", "logger=csv"], run_dir)
    value = run(cfg)
    return run_dir, json.loads((run_dir / "metrics.json").read_text()), value


def test_train_writes_metrics_checkpoints_and_outputs(trained):
    run_dir, metrics, value = trained
    for stage in ("val", "test"):
        assert {f"{stage}/{k}" for k in KEYS} <= set(metrics)
    assert {"train/elbo", "train/rec", "train/kl", "train/kl_weight"} <= set(metrics)
    assert value == metrics["val/nll"]
    assert metrics["test/nll"] <= -metrics["test/elbo"] + 1e-3  # the IW estimate tightens the bound
    assert (run_dir / "checkpoints" / "best.ckpt").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert len((run_dir / "samples.txt").read_text().splitlines()) == 3
    assert (run_dir / "reconstructions.txt").read_text().startswith("reference\tdecoding\n")
    assert (run_dir / "csv").is_dir()


@pytest.mark.parametrize("ckpt", ["best", "last"])
def test_restore_gives_the_end_of_training_test_metrics(trained, make_config, ckpt):
    run_dir, metrics, _ = trained
    cfg = make_config(["debug=fast", "mode=test", f"ckpt={ckpt}", f"run_dir={run_dir}"], name=f"test_{ckpt}")
    run(cfg)
    restored = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    # one epoch: best and last are the same weights as the ones tested at the end of training
    for key, value in metrics.items():
        if key.startswith("test/"):
            assert restored[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_last_checkpoint_is_the_latest_state_best_the_best(make_config):
    """``last`` follows training even when the monitored metric stops improving (it is constant
    here: the KL weight under annealing=constant), ``best`` stays at its first value."""
    cfg = make_config(["debug=fast", "trainer.max_epochs=3", "trainer.limit_train_batches=2", "annealing=constant",
                       "optimized_metric=train/kl_weight", "callbacks.early_stopping=null"])
    run(cfg)
    folder = Path(cfg.paths.output_dir) / "checkpoints"
    steps = {name: torch.load(folder / f"{name}.ckpt", map_location="cpu", weights_only=False)["global_step"]
             for name in ("best", "last")}
    assert steps == {"best": 2, "last": 6}


def test_sample_and_interpolate(trained, make_config, capsys):
    run_dir, _, _ = trained
    cfg = make_config(["debug=fast", "mode=sample", f"run_dir={run_dir}", "num_samples=4"], "sample")
    run(cfg)
    greedy = (Path(cfg.paths.output_dir) / "samples.txt").read_text().splitlines()
    assert len(greedy) == 4
    cfg = make_config(["debug=fast", "mode=sample", f"run_dir={run_dir}", "num_samples=4", "greedy=false"], "sampled")
    run(cfg)
    sampled = (Path(cfg.paths.output_dir) / "samples.txt").read_text().splitlines()
    assert len(sampled) == 4 and sampled != greedy  # the same z (seed), words drawn from the softmax
    with pytest.raises(ConfigError, match="greedy=3: must be true"):
        run(make_config(["debug=fast", "mode=sample", f"run_dir={run_dir}", "greedy=3"], "bad_greedy"))
    cfg = make_config(["debug=fast", "mode=interpolate", f"run_dir={run_dir}", "sentence_a=the company said",
                       "sentence_b=prices fell sharply", "steps=3"], "interpolate")
    run(cfg)
    assert len((Path(cfg.paths.output_dir) / "interpolation.txt").read_text().splitlines()) == 5
    cfg = make_config(["debug=fast", "mode=interpolate", f"run_dir={run_dir}"], "interpolate_missing")
    with pytest.raises(ConfigError, match=r"sentence_a=…"):
        run(cfg)


def test_corrupt_or_missing_checkpoint(tmp_path, make_config):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="corrupt"):
        run(make_config(["debug=fast", "mode=test", f"ckpt={bad}"], "bad"))
    with pytest.raises(ConfigError, match="no checkpoint file"):
        run(make_config(["debug=fast", "mode=test", "ckpt=best", f"run_dir={tmp_path}"], "missing"))
    assert not (tmp_path / "bad" / "metrics.json").exists()


def test_nan_loss_stops_with_a_clear_error(make_config, monkeypatch):
    from vae_lab.models.sentence_vae import SentenceVAE

    real = SentenceVAE.log_weights

    def nan_after_two_steps(self, batch, num_samples=1, encoded=None):
        log_weights = real(self, batch, num_samples, encoded)
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls > 2:
            log_weights.log_likelihood = log_weights.log_likelihood * float("nan")
        return log_weights

    monkeypatch.setattr(SentenceVAE, "log_weights", nan_after_two_steps)
    cfg = make_config(["debug=fast"], "nan")
    with pytest.raises(NonFiniteLossError, match=r"train/loss is (nan|inf) at step"):
        run(cfg)
    assert not (Path(cfg.paths.output_dir) / "metrics.json").exists()


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "vae_lab", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_cli_bad_value_is_one_line_before_training(tmp_path):
    result = cli("debug=fast", "model.rnn_type=rnn", cwd=tmp_path)
    assert result.returncode == 2
    assert "error: model.rnn_type='rnn': allowed values are ['gru', 'lstm']" in result.stderr
    assert not list(tmp_path.glob("outputs/**/metrics.json"))
    result = cli("model=nosuch", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: model=nosuch: no such option in conf/model/")
    assert len(result.stderr.splitlines()) == 1 and not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_cli_multirun_with_wandb_offline(tmp_path):
    """Two sweep jobs (trained on the k=3 importance-weighted bound), each its own folder, metrics.json
    and offline wandb run, grouped by sweep; the collector tabulates them."""
    result = cli("-m", "debug=fast", "logger=wandb", "k=3", "annealing=linear,cyclical", "hydra.sweep.dir=sweep",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    for job in ("0", "1"):
        assert (tmp_path / "sweep" / job / "metrics.json").is_file()
        runs = list((tmp_path / "sweep" / job / "wandb").glob("offline-run-*"))
        assert len(runs) == 1
    from experiments.collect import load_runs, markdown_table

    table = markdown_table(load_runs([tmp_path / "sweep"]), ["test/nll", "test/bleu"])
    assert "annealing=linear" in table and "annealing=cyclical" in table and len(table.splitlines()) == 4


def test_a_checkpoint_that_carries_code_is_refused_without_running_it(tmp_path, make_config):
    """Unpickling is weights-only: a crafted .ckpt whose pickle calls os.system is refused, and the
    command never runs; a stored config naming a _target_ outside vae_lab is refused too."""
    import os

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    crafted = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "payload": Exploit()}, crafted)
    with pytest.raises(ConfigError, match="holds objects other than tensors"):
        run(make_config(["debug=fast", "mode=test", f"ckpt={crafted}"], "crafted"))
    assert not marker.exists()
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "vae_lab_config": {"model": {"_target_": "os.system", "command": "true"},
                                                     "dataset": {}}}, foreign)
    with pytest.raises(ConfigError, match=r"model\._target_=os\.system"):
        run(make_config(["debug=fast", "mode=test", f"ckpt={foreign}"], "foreign"))


def test_step_checkpoints_are_written_at_the_chosen_steps_and_restore(make_config):
    """The discrete-VAE recipe keeps checkpoints at chosen steps for the learning curve; a step past
    the run's end writes nothing, and each one restores with its step."""
    cfg = make_config(["model=vae_mlp", "debug=fast", "trainer.max_steps=4", "trainer.max_epochs=-1",
                       "callbacks.step_checkpoints.steps=[2,4,9]"])
    run(cfg)
    folder = Path(cfg.paths.output_dir) / "checkpoints"
    assert sorted(p.name for p in folder.glob("step*.ckpt")) == ["step2.ckpt", "step4.ckpt"]
    assert torch.load(folder / "step2.ckpt", weights_only=False)["global_step"] == 2
    tested = make_config(["mode=test", f"ckpt={folder / 'step2.ckpt'}", "logger=none"], name="tested")
    run(tested)
    assert math.isfinite(json.loads((Path(tested.paths.output_dir) / "metrics.json").read_text())["test/nll"])


def test_lstm_sentence_vae_trains_under_cpu_bf16_autocast(make_config):
    """oneDNN has no bfloat16 LSTM kernel on CPU: trainer.precision=bf16-mixed ran the sentence VAE's
    LSTM into 'could not create a primitive descriptor'; the LSTM now runs in float32 under CPU autocast."""
    cfg = make_config(["debug=fast", "model.rnn_type=lstm", "trainer.precision=bf16-mixed",
                       "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"])
    run(cfg)
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert math.isfinite(metrics["train/elbo"]) and math.isfinite(metrics["test/nll"])

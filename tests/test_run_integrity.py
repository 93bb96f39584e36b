"""Runs that cannot be corrupted or misread (issue 23): a checkpoint carries its experiment, a run folder is
self-contained and has one writer, a refused run writes nothing, data a run would shrink is counted, an
interrupt saves and says how to resume, and a failed write keeps the previous file."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.discovery import family_representatives
from tests.golden.make_golden import golden_overrides
from vae_lab.errors import ConfigError, WriteError
from vae_lab.run_folder import busy
from vae_lab.train import run

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {family.rsplit(".", 1)[-1]: case for family, case in family_representatives().items()}


def vae_lab(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    result = subprocess.run([sys.executable, "-m", "vae_lab", *args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def digest(folder: Path) -> dict[str, str]:
    """Every file of a folder (recursively) by its sha256."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def metrics_of(folder: Path) -> dict:
    return json.loads((Path(folder) / "metrics.json").read_text())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny trained run of each family's baseline, with its checkpoints."""
    from tests.conftest import compose_config

    runs = {}
    for family, (model, dataset) in FAMILIES.items():
        folder = tmp_path_factory.mktemp(family) / "run"
        run(compose_config([*golden_overrides(model, dataset), "k=2"], folder))
        runs[family] = folder
    return runs


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_checkpoint_tests_its_own_experiment_to_the_digit(make_config, trained, family):
    """``mode=test ckpt=best`` with no other override: the model, k, bound, data and evaluation settings are
    the checkpoint's (here k = 2 and debug=fast's sizes, none of them on this command line)."""
    cfg = make_config(["mode=test", f"run_dir={trained[family]}", "ckpt=best", "torch_threads=1"])
    run(cfg)
    tested, original = metrics_of(cfg.paths.output_dir), metrics_of(trained[family])
    assert {k: v for k, v in tested.items() if k.startswith("test/")} == \
        {k: v for k, v in original.items() if k.startswith("test/")}


def test_an_override_that_changes_the_trained_model_is_refused(make_config, trained):
    folder = trained["SentenceVAE"]
    for override, shown in (("k=1", "k=2"), ("model.latent_dim=4", "model.latent_dim=8"),
                            ("objective.bound=iw", "objective.bound=elbo")):
        with pytest.raises(ConfigError, match=rf"^{override}: the checkpoint .* was trained with {shown}, and a "
                                              "checkpoint carries its experiment"):
            run(make_config(["mode=test", f"run_dir={folder}", override], override))
    with pytest.raises(ConfigError, match=r"^model=vae_mlp: the checkpoint .* was trained with model="):
        run(make_config(["mode=test", f"run_dir={folder}", "model=vae_mlp"], "group"))
    # what is safe to change is changed: the evaluation's sample count; repeating the checkpoint's value is fine
    cfg = make_config(["mode=test", f"run_dir={folder}", "eval.test_samples=2", "k=2", "torch_threads=1"], "safe")
    run(cfg)
    assert metrics_of(cfg.paths.output_dir)["test/nll"] != metrics_of(folder)["test/nll"]


def test_the_mode_check_reads_the_checkpoints_family(make_config, trained, capsys):
    folder = trained["TenseCVAE"]
    run(make_config(["mode=convert", f"run_dir={folder}", "word=abandon", "source=sp", "target=p"], "convert"))
    assert "abandon (sp) -> " in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"^mode=interpolate: model TenseCVAE offers the modes \['train', 'test', "
                                          r"'sample', 'convert'\]"):
        run(make_config(["mode=interpolate", f"run_dir={folder}"], "interpolate"))


def test_the_test_runs_saved_config_says_what_was_tested(tmp_path):
    trained, tested = tmp_path / "trained", tmp_path / "tested"
    vae_lab("model=vae_mlp", "k=3", "debug=fast", "logger=none", "torch_threads=1", f"hydra.run.dir={trained}", cwd=tmp_path)
    vae_lab("mode=test", f"run_dir={trained}", "logger=none", "torch_threads=1", f"hydra.run.dir={tested}", cwd=tmp_path)
    from omegaconf import OmegaConf

    saved = OmegaConf.load(tested / ".hydra" / "config.yaml")
    assert saved.model._target_.endswith("ImageVAE") and saved.k == 3 and saved.dataset.reader.name == "mnist"
    assert {k: v for k, v in metrics_of(tested).items() if k.startswith("test/")} == \
        {k: v for k, v in metrics_of(trained).items() if k.startswith("test/")}


def test_a_refused_run_leaves_the_old_folder_byte_identical(tmp_path):
    folder = tmp_path / "run"
    vae_lab("debug=fast", "logger=none", "torch_threads=1", f"hydra.run.dir={folder}", cwd=tmp_path)
    before = digest(folder)
    refused = vae_lab("debug=fast", "model.latent_dim=4", "annealing=linear", "logger=none",
                      f"hydra.run.dir={folder}", cwd=tmp_path, check=False)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: {folder} holds another run's checkpoints: resume it with mode=train run_dir={folder} ckpt=last, "
        "test it with mode=test run_dir=…, or give a new hydra.run.dir"]
    assert digest(folder) == before


def test_a_second_writer_stops_with_one_line_and_touches_nothing(tmp_path):
    folder = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    first = subprocess.Popen([sys.executable, "-m", "vae_lab", "debug=fast", "logger=none", "torch_threads=1",
                              "trainer.max_epochs=1000", "callbacks.early_stopping=null",
                              f"hydra.run.dir={folder}"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            # training has begun (its first checkpoint), so Hydra has finished writing .hydra/
            if (folder / "checkpoints" / "last.ckpt").is_file() and busy(folder):
                break
            time.sleep(0.1)
        assert busy(folder), "the first run never held its folder"
        record = digest(folder / ".hydra")
        second = vae_lab("debug=fast", "seed=7", "logger=none", f"hydra.run.dir={folder}", cwd=tmp_path, check=False)
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {folder} is in use by pid {first.pid}"), lines
        assert digest(folder / ".hydra") == record
    finally:
        first.kill()
        first.wait()
    assert busy(folder) is None  # a killed run's lock does not outlive it: the folder can be resumed


def test_a_copied_run_folder_resumes_on_its_own_checkpoints_and_keeps_every_metric(make_config, tmp_path):
    original, copy = tmp_path / "original", tmp_path / "copy"
    run(make_config(["debug=fast", "torch_threads=1"], "original"))
    shutil.copytree(tmp_path / "original", copy)
    shutil.rmtree(original)
    finished = metrics_of(copy)
    cfg = make_config(["mode=train", f"run_dir={copy}", "ckpt=last", "torch_threads=1"], "resume")
    run(cfg)
    resumed = metrics_of(copy)
    assert set(resumed) >= set(finished) and {k for k in resumed if k.startswith("train/")}
    state = torch.load(copy / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["callbacks"]
    paths = [s["best_model_path"] for key, s in state.items() if key.startswith("ModelCheckpoint")]
    assert paths and all(not os.path.isabs(p) for p in paths)


def test_lines_cut_to_max_length_are_counted_and_a_too_small_split_stops(make_config, tmp_path, caplog):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    words = [f"w{i % 50}" for i in range(2000)]
    lines = [" ".join(words[i:i + 8]) for i in range(0, 400, 8)]
    (corpus / "ptb.train.txt").write_text("\n".join(lines + [" ".join(words)] * 3) + "\n")
    for split in ("valid", "test"):
        (corpus / f"ptb.{split}.txt").write_text("\n".join(lines[:10]) + "\n")
    cfg = make_config(["dataset=text_files", f"dataset.path={corpus}", "debug=fast", "dataset.limit=null",
                       "torch_threads=1"], "cut")
    run(cfg)
    assert metrics_of(cfg.paths.output_dir)["data/truncated_examples"] == 3
    assert any("3 of the 53 train sentences (5.7%) are longer and were cut" in r.getMessage() for r in caplog.records)
    (corpus / "ptb.train.txt").write_text(" ".join(words) + "\n")  # one 2,000-word line
    with pytest.raises(ConfigError, match=r"^dataset: the train split has 1 sentences, fewer than one batch"):
        run(make_config(["dataset=text_files", f"dataset.path={corpus}", "debug=fast", "dataset.limit=null"], "one"))


def _as_from_a_terminal() -> None:
    """The child takes Ctrl-C as a foreground program does: a test session started in the background of a
    shell (``make test &``, some CI runners) ignores SIGINT, an ignored signal stays ignored through exec,
    and Python then installs no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupt_saves_last_ckpt_and_says_how_to_resume(tmp_path, sig, code):
    folder = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    process = subprocess.Popen([sys.executable, "-m", "vae_lab", "debug=fast", "logger=csv", "torch_threads=1",
                                "trainer.max_epochs=1000", "callbacks.early_stopping=null",
                                "trainer.limit_train_batches=null", f"hydra.run.dir={folder}"], cwd=tmp_path, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=_as_from_a_terminal)
    for _ in range(600):  # wait for the first epoch's checkpoint, then interrupt the run
        if (folder / "checkpoints" / "last.ckpt").is_file():
            break
        time.sleep(0.1)
    time.sleep(2)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].endswith(f"go on with python -m vae_lab mode=train run_dir={folder} ckpt=last")
    step = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]
    assert f"interrupted at step {step};" in errors[0]
    vae_lab("torch_threads=1", f"trainer.max_steps={step + 3}", "mode=train", f"run_dir={folder}", "ckpt=last",
            cwd=tmp_path)  # it resumes (its experiment from the checkpoint): 3 steps more, then the test
    import csv

    import yaml

    # the folder says what it holds: the resume's trainer.max_steps, in its config and in its overrides
    assert yaml.safe_load((folder / ".hydra" / "config.yaml").read_text())["trainer"]["max_steps"] == step + 3
    overrides = yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text())
    assert f"trainer.max_steps={step + 3}" in overrides and "trainer.max_epochs=1000" in overrides
    assert not any(o.startswith(("mode=", "run_dir=", "ckpt=")) for o in overrides)

    with open(folder / "csv" / "version_0" / "metrics.csv", newline="") as handle:
        rows = [(row["step"], row.get("train/loss")) for row in csv.DictReader(handle) if row.get("train/loss")]
    assert len(rows) == len(set(rows))  # each logged step once


def test_a_failed_checkpoint_write_keeps_the_previous_one(make_config, tmp_path, monkeypatch):
    cfg = make_config(["debug=fast", "torch_threads=1"], "run")
    run(cfg)
    folder = Path(cfg.paths.output_dir) / "checkpoints"
    before = digest(folder)

    def full_disk(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    import vae_lab.callbacks

    monkeypatch.setattr(vae_lab.callbacks, "write_atomic", full_disk)
    with pytest.raises(WriteError, match=r"(best|last)\.ckpt: the checkpoint could not be written \(No space left on "
                                         r"device\); the previous one is intact"):
        run(make_config(["debug=fast", "torch_threads=1", "trainer.max_epochs=2", "mode=train",
                         f"run_dir={cfg.paths.output_dir}", "ckpt=last"], "resume"))
    assert digest(folder) == before  # the same files, byte for byte: no temporary one left

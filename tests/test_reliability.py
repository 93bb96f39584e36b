"""What a user can expect on faults and in shared places: file modes, run folders, logged configs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from vae_lab.data.files import run_id, write_atomic
from vae_lab.train import run

ROOT = Path(__file__).resolve().parents[1]


def test_written_outputs_get_the_usual_mode(tmp_path):
    path = tmp_path / "metrics.json"
    write_atomic(path, "{}\n")
    expected = 0o666 & ~_umask()
    assert path.stat().st_mode & 0o777 == expected
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_run_folders_of_the_same_second_differ():
    ids = {run_id() for _ in range(3)}
    child = subprocess.run([sys.executable, "-c", "from vae_lab.data.files import run_id; print(run_id())"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert child.split("-")[1] != str(os.getpid()) and child not in ids
    hydra_dirs = yaml.safe_load((ROOT / "conf/hydra/default.yaml").read_text())
    assert hydra_dirs["run"]["dir"].endswith("_${vae_lab_run_id:}")
    assert hydra_dirs["sweep"]["dir"].endswith("_${vae_lab_run_id:}")


def test_every_logger_gets_the_composed_config(make_config):
    cfg = make_config(["debug=fast", "logger=csv", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
                       "trainer.limit_test_batches=1"])
    run(cfg)
    hparams = yaml.safe_load(next(Path(cfg.paths.output_dir).glob("csv/**/hparams.yaml")).read_text())
    assert hparams["model"]["_target_"] == "vae_lab.models.sentence_vae.SentenceVAE"
    assert hparams["dataset"]["limit"] == 200 and hparams["seed"] == 42


def test_collect_on_a_missing_folder_fails_with_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "experiments/collect.py"), str(tmp_path / "nowhere")],
                            capture_output=True, text=True)
    assert result.returncode != 0 and result.stderr.strip().startswith("error: no folder")
    result = subprocess.run([sys.executable, str(ROOT / "experiments/collect.py"), str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "no metrics.json" in result.stderr


def test_a_damaged_ptb_cache_is_rewritten_from_the_package(tmp_path, caplog):
    from vae_lab.data.text import TextDataModule

    module = TextDataModule(data_dir=str(tmp_path))
    module.prepare_data()
    train = tmp_path / "ptb" / "ptb.train.txt"
    train.write_text("\n".join(train.read_text().splitlines()[:839]) + "\n")  # a truncated cache
    fresh = TextDataModule(data_dir=str(tmp_path))
    fresh.prepare_data()
    fresh.setup("fit")
    assert len(fresh.datasets["train"]) == 42068
    assert "fails its md5 check: rewriting it" in caplog.text


import pytest  # noqa: E402

from vae_lab.errors import ConfigError  # noqa: E402
from vae_lab.train import validate  # noqa: E402


@pytest.mark.parametrize("override,message", [
    ("model.latent_dim=0", "model.latent_dim=0: give an integer >= 1"),
    ("dataset.batch_size=0", "dataset.batch_size=0: give an integer >= 1"),
    ("optimizer.lr=abc", "optimizer.lr=abc: give a number > 0"),
    ("optimizer.lr=-1", "optimizer.lr=-1: give a number > 0"),
    ("trainer.max_epochs=abc", "trainer.max_epochs=abc: give an integer >= -1"),
    ("objective.free_bits=abc", "objective.free_bits=abc: give a number >= 0"),
    ("steps=-5", "steps=-5: give an integer >= 0"),
    ("num_samples=-1", "num_samples=-1: give an integer >= 1"),
    ("dataset.limit=0", "dataset.limit=0: give an integer >= 1, or null"),
    ("dataset.limit=-2", "dataset.limit=-2: give an integer >= 1, or null"),
    ("objective.bound=iwae", "objective.bound=iwae: allowed values are"),
])
def test_bad_values_stop_before_anything_is_built_with_one_line(make_config, override, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace("+", r"\+")):
        validate(make_config([override]))


def test_a_mode_the_family_does_not_offer_names_the_modes_it_does(make_config):
    with pytest.raises(ConfigError, match=r"mode=convert: model SentenceVAE offers the modes "
                                          r"\['train', 'test', 'sample', 'interpolate'\]"):
        validate(make_config(["mode=convert"]))


def _text_files(folder: Path, train: bytes, valid: bytes = b"a b\n", test: bytes = b"a b\n") -> None:
    folder.mkdir(exist_ok=True)
    for name, content in (("train", train), ("valid", valid), ("test", test)):
        (folder / f"ptb.{name}.txt").write_bytes(content)


def test_empty_or_undecodable_text_splits_stop_with_one_line(tmp_path, make_config):
    data = tmp_path / "data"
    _text_files(data, b"")
    with pytest.raises(ConfigError, match=r"ptb\.train\.txt holds no sentence"):
        run(make_config(["debug=fast", "dataset=text_files", f"dataset.path={data}"], "empty"))
    _text_files(data, b"the cat\nsat \xff\xfe here\n")
    with pytest.raises(ConfigError, match=r"ptb\.train\.txt: line 2 is not UTF-8"):
        run(make_config(["debug=fast", "dataset=text_files", f"dataset.path={data}"], "bytes"))


def test_the_cli_prints_one_line_for_a_nan_loss_and_leaves_no_empty_folder(tmp_path):
    result = subprocess.run([sys.executable, "-m", "vae_lab", "debug=fast", "logger=none", "optimizer.lr=1e30",
                             "trainer.gradient_clip_val=null", "trainer.limit_train_batches=5",
                             f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: train/loss is nan") and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # it held only Hydra's own files: removed


def test_debug_fast_validates_every_epoch_so_best_exists(make_config):
    assert make_config(["experiment=verb_tense", "debug=fast"]).trainer.check_val_every_n_epoch == 1


def _train_command(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vae_lab", "debug=fast", "logger=csv", "trainer.max_epochs=3",
            "trainer.limit_train_batches=12", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
            "trainer.deterministic=true", "torch_threads=1", "annealing=linear", "annealing.steps=20",
            f"hydra.run.dir={run_dir}", *extra]


def test_a_killed_run_resumes_to_the_metrics_of_an_uninterrupted_one(tmp_path):
    """SIGKILL in the middle of epoch 2, resume from last.ckpt in the same folder: the final metrics
    (train means of the last epoch, val, test) equal an uninterrupted run's with the same seed."""
    import json
    import signal
    import time

    whole = tmp_path / "whole"
    subprocess.run(_train_command(whole), check=True, capture_output=True, cwd=tmp_path)
    killed = tmp_path / "killed"
    process = subprocess.Popen(_train_command(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               cwd=tmp_path)
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)  # into the next epoch
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "metrics.json").exists()
    resumed = subprocess.run(_train_command(tmp_path / "resume_log", f"run_dir={killed}", "ckpt=last"),
                             capture_output=True, text=True, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected = json.loads((whole / "metrics.json").read_text())
    got = json.loads((killed / "metrics.json").read_text())
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    rows = (killed / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    steps = {line.split(",")[1] for line in rows[1:]}
    assert {"11", "23", "35"} <= steps  # the csv log goes on in the same file, before and after the kill


def test_a_new_run_never_writes_into_a_folder_with_checkpoints(tmp_path, make_config):
    cfg = make_config(["debug=fast"], "taken")
    (Path(cfg.paths.output_dir) / "checkpoints").mkdir(parents=True)
    (Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt").write_bytes(b"x")
    with pytest.raises(ConfigError, match="holds another run's checkpoints: resume it with mode=train run_dir="):
        run(cfg)


def test_an_unwritable_data_cache_names_the_path_and_the_key(tmp_path, make_config, monkeypatch):
    """(As root every folder is writable, so the refusal is simulated where the cache is written.)"""
    import vae_lab.data.text as text

    def refuse(path, data):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(text, "write_atomic", refuse)
    cfg = make_config(["debug=fast", f"paths.data_dir={tmp_path / 'readonly'}"])
    with pytest.raises(ConfigError, match=r"^paths\.data_dir=.*readonly: cannot write .*ptb\.train\.txt "
                                          r"\(Permission denied\); set paths\.data_dir="):
        run(cfg)

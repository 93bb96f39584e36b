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

"""Every failure of ``python -m vae_lab`` is one line on stderr (``error: …``), exit code 2, and leaves no file
behind: Hydra's composition errors (with the nearest valid names), Lightning's refusals, an accelerator or
a launcher this machine lacks, a run folder that cannot be made. ``HYDRA_FULL_ERROR=1`` keeps Hydra's own."""
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vae_lab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline", **env}
    return subprocess.run([sys.executable, "-m", "vae_lab", *args, "torch_threads=1"], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=600)


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def assert_one_line(result: subprocess.CompletedProcess, cwd: Path, *fragments: str) -> str:
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not files_under(cwd / "outputs") and not files_under(cwd / "multirun"), files_under(cwd / "outputs")
    return lines[0]


CASES = {
    "unknown option": (["model=dvae_foo"], ["model=dvae_foo: no such option in conf/model/", "did you mean dvaes_"]),
    "typo'd key": (["model.latnet_dim=4"], ["did you mean model.latent_dim", "+model.latnet_dim=4"]),
    "unknown key": (["foo=1"], ["no key 'foo'", "+foo=1"]),
    "misspelt group": (["modle=vae"], ["no key 'modle'", "did you mean mode or model"]),
    "lightning refuses": (["debug=fast", "trainer.precision=17"], ["trainer: Lightning refuses", "Precision 17"]),
    "diverging loss": (["debug=fast", "optimizer.lr=1e6"], ["is nan at step", "lower optimizer.lr"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_failure_is_one_line_exit_2_and_leaves_nothing(case, tmp_path):
    arguments, fragments = CASES[case]
    result = cli(*arguments, cwd=tmp_path)
    if case != "diverging loss":  # a run that trained keeps its log; one refused at start keeps nothing
        assert_one_line(result, tmp_path, *fragments)
    else:
        lines = result.stderr.splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
        assert all(fragment in lines[0] for fragment in fragments) and not list(tmp_path.rglob("metrics.json"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_gpu_without_one_names_the_fix(tmp_path):
    assert_one_line(cli("trainer=gpu", cwd=tmp_path), tmp_path, "trainer=gpu: no CUDA device here; use trainer=cpu")


@pytest.mark.skipif(shutil.which("sbatch") is not None, reason="this machine has Slurm")
def test_slurm_launcher_without_slurm_leaves_no_sweep_folder(tmp_path):
    assert_one_line(cli("-m", "hydra/launcher=slurm", "k=1,2", cwd=tmp_path), tmp_path,
                    "hydra/launcher=slurm: no Slurm here")


def test_a_run_folder_that_cannot_be_made(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    line = assert_one_line(cli(f"hydra.run.dir={tmp_path / 'a_file' / 'run'}", cwd=tmp_path), tmp_path,
                           "cannot write the run folder", "hydra.run.dir=")
    assert str(tmp_path / "a_file" / "run") in line and (tmp_path / "a_file").read_text() == "not a folder"


def test_hydra_full_error_keeps_hydras_own_message(tmp_path):
    result = cli("model=dvae_foo", cwd=tmp_path, HYDRA_FULL_ERROR="1")
    assert result.returncode != 0 and "Available options in 'model'" in result.stderr
    assert len(result.stderr.splitlines()) > 1


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_a_data_cache_that_cannot_be_written_is_one_config_error(code, make_config, monkeypatch):
    """A read-only file system (EROFS) is told like a folder without permission (EACCES)."""
    from vae_lab.data.text import TextDataModule
    from vae_lab.instantiators import build_datamodule

    def refuse(self):
        raise OSError(code, os.strerror(code), "/read-only/ptb")

    monkeypatch.setattr(TextDataModule, "prepare_data", refuse)
    cfg = make_config(["debug=fast", "dataset=ptb"])
    with pytest.raises(ConfigError, match="cannot write /read-only/ptb.*VAE_LAB_DATA_DIR"):
        build_datamodule(cfg)

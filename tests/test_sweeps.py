"""Sweeps beyond the basic launcher: submitit's local executor (the cluster launcher's code path), the
Slurm launcher config as sbatch sees it, and an Optuna search over a shipped search space."""
import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.conftest import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]
FAST = ("debug=fast", "logger=none", "torch_threads=1")


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m vae_lab *args``; the result carries the process id as ``pid``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen([sys.executable, "-m", "vae_lab", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as process:
        stdout, stderr = process.communicate(timeout=600)
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    result.pid = process.pid
    return result


def compose_with_hydra(overrides: list[str]):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
            return compose(config_name="train", overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def test_submitit_local_sweep_runs_each_job_in_its_own_process(tmp_path):
    """Two jobs through submitit's local executor: each job pickled, run by a process of its own,
    its return value (val/nll) pickled back and collected by the launcher."""
    sweep = tmp_path / "sweep"
    result = cli("-m", "hydra/launcher=submitit_local", *FAST, "model.latent_dim=4,8", f"hydra.sweep.dir={sweep}",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = [json.loads((sweep / job / "metrics.json").read_text()) for job in ("0", "1")]
    for job, values in enumerate(metrics):
        assert {"train/elbo", "val/nll", "test/nll", "test/bleu"} <= set(values), job
        assert all(math.isfinite(v) for v in values.values()), job
        assert f"model.latent_dim={(4, 8)[job]}" in (sweep / str(job) / ".hydra" / "overrides.yaml").read_text()
    submissions = sorted((sweep / ".submitit").glob("*/*_result.pkl"))
    job_ids = {path.parent.name for path in submissions}  # the local executor's job id is the job's process id
    assert len(job_ids) == 2 and str(result.pid) not in job_ids
    returned = []
    for path in submissions:
        status, job_return = pickle.loads(path.read_bytes())
        assert status == "success"
        returned.append(job_return.return_value)
    assert sorted(returned) == sorted(values["val/nll"] for values in metrics)


def test_slurm_launcher_keys_reach_sbatch(tmp_path, monkeypatch):
    """``hydra/launcher=slurm``: the keys users set become sbatch's options, and a multi-node DDP trainer
    gives one task per device on each node. Hydra's own launcher writes the script; ``sbatch`` and
    ``srun`` are stand-ins that keep it (no cluster here)."""
    bin_dir, script = tmp_path / "bin", tmp_path / "submitted.sh"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {script}\necho "Submitted batch job 4242"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cfg = compose_with_hydra(["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2",
                              "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=240",
                              "hydra.launcher.gpus_per_node=4", "hydra.launcher.cpus_per_task=8",
                              "hydra.launcher.mem_gb=64", "hydra.launcher.array_parallelism=2",
                              f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    import submitit

    monkeypatch.setattr(submitit.slurm.slurm.SlurmJob, "results", lambda job: ["not run"])
    assert launcher.launch([["seed=1"], ["seed=2"], ["seed=3"]], initial_job_idx=0) == ["not run"] * 3
    options = {line.split()[1] for line in script.read_text().splitlines() if line.startswith("#SBATCH")}
    assert {"--partition=gpu", "--time=240", "--gpus-per-node=4", "--cpus-per-task=8", "--mem=64GB",
            "--array=0-2%2", "--nodes=2", "--ntasks-per-node=4", "--job-name=vae_lab"} <= options


@pytest.mark.parametrize(("search", "model"), [("ptb_optuna", "vae"), ("dvae_optuna", "dvaes_power")])
def test_search_spaces_name_keys_of_the_config(search, model):
    """Every searched key exists in the composed config (a typo would only add a key, or fail late)."""
    cfg = compose_with_hydra([f"hparams_search={search}", f"model={model}"])
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.mode.name == "MULTIRUN"
    assert cfg.hydra.sweeper.direction == "minimize" and cfg.hydra.sweeper.sampler.seed is not None
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    for key in cfg.hydra.sweeper.params:
        assert key in choices or OmegaConf.select(cfg, key, default="missing") != "missing", key


def test_optuna_search_returns_the_best_trial(tmp_path):
    """Three trials of the sentence-VAE search: Optuna's best value is the smallest val/nll the trials
    wrote, and its best parameters are that trial's overrides; the study is kept in a SQLite storage."""
    sweep, storage = tmp_path / "search", f"sqlite:///{tmp_path / 'study.db'}"
    result = cli("hparams_search=ptb_optuna", *FAST, "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep}",
                 f"hydra.sweeper.storage={storage}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = sorted(path for path in sweep.iterdir() if path.is_dir() and path.name.isdigit())
    assert [path.name for path in trials] == ["0", "1", "2"]
    values = [json.loads((path / "metrics.json").read_text())["val/nll"] for path in trials]
    overrides = [yaml.safe_load((path / ".hydra" / "overrides.yaml").read_text()) for path in trials]
    assert len({tuple(o) for o in overrides}) == 3  # three different points of the space
    found = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert found["best_value"] == min(values)
    best = overrides[values.index(min(values))]
    for key, value in found["best_params"].items():
        assert f"{key}={value}" in best
    import optuna

    study = optuna.load_study(study_name="ptb_optuna", storage=storage)
    assert sorted(trial.value for trial in study.trials) == sorted(values)

"""The CPU twin of experiments/gpu_check.sh: its commands at trainer=cpu and tiny sizes, so the one
prepared GPU call cannot rot. Every vae_lab command of the check composes; a subset (the cvae under
bf16-mixed, which once crashed in oneDNN's LSTM, a Gibbs timing and a DVAE++ throughput) runs through
the script itself and must come back ok, with its JSON and Markdown table written to $OUT."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import compose_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
import gpu_check  # noqa: E402


def test_every_vae_lab_command_of_the_check_composes(tmp_path):
    commands = [c for _, c, _ in gpu_check.checks("cpu", True, tmp_path) if c[1:3] == ["-m", "vae_lab"]]
    assert len(commands) == 2 * len(gpu_check.FAMILIES) + 1
    for command in commands:
        overrides = [o for o in command[3:] if not o.startswith("hydra.")]
        compose_config(overrides, tmp_path / "composed")


def test_the_script_runs_a_subset_on_the_cpu_and_writes_its_table(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "GPU_CHECK_TRAINER": "cpu", "GPU_CHECK_TINY": "1",
           "GPU_CHECK_ONLY": "cvae bf16-mixed|Gibbs sweeps/s, 50 |DVAE\\+\\+ images/s, pcd"}
    done = subprocess.run(["bash", str(ROOT / "experiments" / "gpu_check.sh")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [c["check"] for c in report["checks"]] == ["debug=fast cvae bf16-mixed", "Gibbs sweeps/s, 50 chains, 200+200",
                                                      "DVAE++ images/s, pcd"]
    assert float(report["checks"][1]["figure"]) > 0
    assert "| debug=fast cvae bf16-mixed | ok |" in (tmp_path / "gpu_check.md").read_text()

"""The GPU path in one prepared call: every family under debug=fast on the device (float32 and
bf16-mixed), the headline command for 2,000 steps, and the throughputs a GPU is borrowed for.

    experiments/gpu_check.sh                          # on a GPU machine: trainer=gpu, full sizes (< 8 min)
    GPU_CHECK_TRAINER=cpu GPU_CHECK_TINY=1 experiments/gpu_check.sh   # every check on the CPU, tiny: ~7 min
    GPU_CHECK_ONLY='cvae bf16|Gibbs' ...                             # only the checks whose names match

Each check is one command (a ``python -m vae_lab`` run or a bench script); a failing one is recorded
with its exit code and the tail of its output, and the next one runs. Writes ``gpu_check.json`` and
``gpu_check.md`` (a Markdown table) to ``$OUT`` (default ``outputs/gpu_check``); exits 1 when any
check failed.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from vae_lab.data.files import write_atomic

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = [("vae", "ptb"), ("cvae", "verb_tense"), ("vae_mlp", "binarized_mnist"),
            ("dvae_spike_exp", "binarized_mnist"), ("dvaepp_power", "binarized_mnist"), ("dvaes_power", "binarized_mnist")]


def checks(trainer: str, tiny: bool, out: Path) -> list[tuple[str, list[str], str | None]]:
    """(name, command, regex of the figure in its output) for every check, in order."""
    python, device = sys.executable, "cuda" if trainer == "gpu" else "cpu"
    fast = ["debug=fast", f"trainer={trainer}", "logger=none", "torch_threads=1"]
    runs = []
    for precision in ("32-true", "bf16-mixed"):
        for model, dataset in FAMILIES:
            runs.append((f"debug=fast {model} {precision}",
                         [python, "-m", "vae_lab", f"model={model}", f"dataset={dataset}", *fast,
                          f"trainer.precision={precision}", f"hydra.run.dir={out / 'runs' / f'{model}_{precision}'}"],
                         None))
    steps = 20 if tiny else 2000
    runs.append((f"headline dvaes_exp k=5, {steps} steps",
                 [python, "-m", "vae_lab", "model=dvaes_exp", "dataset=binarized_mnist", "k=5", f"trainer={trainer}",
                  f"trainer.max_steps={steps}", "trainer.check_val_every_n_epoch=1000", "eval.test_samples=100",
                  "logger=none", "trainer.enable_progress_bar=false", "callbacks.progress_bar=null",
                  *(["dataset.limit=500", "sampler.num_chains=50", "sampler.num_sweeps=2", "eval.log_z.num_chains=64",
                     "eval.log_z.num_temperatures=50", "trainer.limit_test_batches=1"] if tiny else []),
                  f"hydra.run.dir={out / 'runs' / 'headline'}"],
                 None))
    text_steps = ["--steps", "5", "--warmup", "2"] if tiny else ["--steps", "300", "--warmup", "30"]
    for precision in ("32-true", "bf16-mixed"):
        runs.append((f"sentence VAE tokens/s {precision}",
                     [python, "experiments/bench_text_vae.py", f"trainer.precision={precision}", *text_steps,
                      "--threads", "1", "--accelerator", trainer], r"tokens/s=([\d.]+)"))
    for chains in ((50, 100) if tiny else (1000, 10000)):
        runs.append((f"Gibbs sweeps/s, {chains} chains, 200+200",
                     [python, "experiments/bench_rbm.py", "--device", device, "--chains", str(chains), "--gibbs-only",
                      "--rounds", "2" if tiny else "5", "--threads", "1"],
                     r"gibbs 200\+200, \d+ chains:\s+([\d.]+) sweeps/s"))
    dvae_size = ["--steps", "3", "--warmup", "1", "--chains", "50", "--sweeps", "2"] if tiny else ["--steps", "100", "--warmup", "10"]
    for sampler in ("pcd", "population_annealing"):
        runs.append((f"DVAE++ images/s, {sampler}",
                     [python, "experiments/bench_dvae.py", "--model", "dvaepp_power", "--struct", "1-layer-nonlin",
                      "--sampler", sampler, *dvae_size, "--device", device], r"\| [\d.]+ \| [\d.]+ \| [\d]+% \|$"))
    sentences, samples = ("16", "5") if tiny else ("3761", "500")
    runs.append((f"PTB test cost, {sentences} sentences x {samples} samples",
                 [python, "experiments/bench_text_vae.py", "experiment=bowman2016_ptb", *text_steps, "--threads", "1",
                  "--accelerator", trainer, "--eval-sentences", sentences, "--eval-samples", samples], r"^(test \(\d+ samples.*)$"))
    return runs


def figure(pattern: str | None, output: str) -> str:
    """The last match of ``pattern`` (its one group, or the whole match) in a check's standard output."""
    if pattern is None:
        return ""
    found = re.findall(pattern, output, flags=re.MULTILINE)
    return found[-1] if found else "(not found)"


def write_report(out: Path, trainer: str, tiny: bool, results: list[dict]) -> None:
    """``gpu_check.json`` and ``gpu_check.md`` of the checks done so far (rewritten after each one, so a
    call stopped by its time limit still brings back what it measured)."""
    write_atomic(out / "gpu_check.json", json.dumps({"trainer": trainer, "tiny": tiny, "checks": results}, indent=2) + "\n")
    lines = ["| check | result | seconds | figure |", "|---|---|---|---|"]
    lines += [f"| {r['check']} | {'ok' if r['rc'] == 0 else 'FAIL rc=' + str(r['rc'])} | {r['seconds']} | {r['figure']} |"
              for r in results]
    write_atomic(out / "gpu_check.md", "\n".join(lines) + "\n")


def main() -> int:
    trainer = os.environ.get("GPU_CHECK_TRAINER", "gpu")
    tiny = os.environ.get("GPU_CHECK_TINY", "0") == "1"
    out = Path(os.environ.get("OUT") or ROOT / "outputs" / "gpu_check")
    out.mkdir(parents=True, exist_ok=True)
    only = re.compile(os.environ.get("GPU_CHECK_ONLY", ""))  # a regex of check names (the CPU twin's subset)
    results = []
    write_report(out, trainer, tiny, results)
    for name, command, pattern in checks(trainer, tiny, out):
        if not only.search(name):
            continue
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "offline"})
        seconds = time.perf_counter() - start
        output = done.stdout + done.stderr
        row = {"check": name, "rc": done.returncode, "seconds": round(seconds, 1),
               "figure": figure(pattern, done.stdout) if done.returncode == 0 else "",
               "tail": "" if done.returncode == 0 else output[-1500:]}
        results.append(row)
        print(f"{'ok ' if done.returncode == 0 else 'FAIL'} {seconds:7.1f} s  {name}  {row['figure']}", flush=True)
        write_report(out, trainer, tiny, results)
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    return 1 if any(r["rc"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

"""Test NLL against training step, from the mode=test runs of a training run's step checkpoints
(``callbacks.step_checkpoints``): one line per model, in one plot.

    python experiments/step_curve.py --out experiments/results/dvae/learning_curve \\
        vae_mlp=<curve folder holding step12000/, step25000/, …: metrics.json, .hydra/> [model=<folder> …]

Writes ``<out>.json`` (model -> [[step, test NLL, importance samples], …]) and ``<out>.png``.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import matplotlib
from omegaconf import OmegaConf

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def points(folder: Path) -> list[list[float]]:
    found = []
    for metrics in sorted(folder.glob("step*/metrics.json")):
        step = int(re.fullmatch(r"step(\d+)", metrics.parent.name).group(1))
        config = OmegaConf.load(metrics.parent / ".hydra" / "config.yaml")
        found.append([step, json.loads(metrics.read_text())["test/nll"], int(config.eval.test_samples)])
    return sorted(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="model=folder")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    curves = {name: points(Path(folder)) for name, folder in (run.split("=", 1) for run in args.runs)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(curves, indent=2) + "\n")
    figure, axes = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        axes.plot([p[0] for p in curve], [p[1] for p in curve], marker="o", label=name)
    axes.set(xlabel="training step", ylabel="test NLL (nats)", xscale="log", title="binarized MNIST, 1-layer-nonlin")
    axes.legend()
    figure.tight_layout()
    figure.savefig(args.out.with_suffix(".png"), dpi=120)
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()

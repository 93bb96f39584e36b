"""Collect the metrics.json of runs into one table (Markdown), e.g. after a sweep:

    python experiments/collect.py outputs/train/multiruns/2026-11-26_10-00-00 --keys test/nll test/kl test/bleu

Each row is a run folder; its label is the run's overrides (from .hydra/overrides.yaml).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_KEYS = ["test/nll", "test/ppl", "test/elbo", "test/kl", "test/bleu", "test/active_units", "test/mi"]


def load_runs(roots: list[Path]) -> list[tuple[str, dict]]:
    runs = []
    for root in roots:
        for path in sorted(root.glob("**/metrics.json")):
            overrides = path.parent / ".hydra" / "overrides.yaml"
            label = str(path.parent)
            if overrides.is_file():
                lines = [line[2:].strip() for line in overrides.read_text().splitlines() if line.startswith("- ")]
                label = " ".join(lines) or label
            runs.append((label, json.loads(path.read_text())))
    return runs


def markdown_table(runs: list[tuple[str, dict]], keys: list[str]) -> str:
    rows = ["| run | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for label, metrics in runs:
        cells = [f"{metrics[k]:.4g}" if isinstance(metrics.get(k), (int, float)) else "–" for k in keys]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roots", nargs="+", type=Path)
    parser.add_argument("--keys", nargs="+", default=DEFAULT_KEYS)
    args = parser.parse_args()
    missing = [str(root) for root in args.roots if not root.is_dir()]
    if missing:
        raise SystemExit(f"error: no folder {', '.join(missing)}: pass the outputs folder of a run or a sweep")
    runs = load_runs(args.roots)
    if not runs:
        raise SystemExit(f"error: no metrics.json under {', '.join(map(str, args.roots))}: nothing to collect")
    print(markdown_table(runs, args.keys))


if __name__ == "__main__":
    main()

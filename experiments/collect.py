"""Collect the metrics.json of runs into one table (Markdown), e.g. after a sweep:

    python experiments/collect.py outputs/train/multiruns/2026-11-26_10-00-00 --keys test/nll test/kl test/bleu

Each row is a run folder; its label is the run's overrides (from .hydra/overrides.yaml). The tables by
model family, with plots: ``python -m vae_lab.report <folder>`` (vae_lab/report.py, which this uses).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vae_lab.report import checked_runs, load_runs, markdown_table  # noqa: E402

DEFAULT_KEYS = ["test/nll", "test/ppl", "test/elbo", "test/kl", "test/bleu", "test/active_units", "test/mi"]
__all__ = ["DEFAULT_KEYS", "load_runs", "markdown_table"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roots", nargs="+", type=Path)
    parser.add_argument("--keys", nargs="+", default=DEFAULT_KEYS)
    args = parser.parse_args()
    print(markdown_table(checked_runs(args.roots), args.keys))


if __name__ == "__main__":
    main()

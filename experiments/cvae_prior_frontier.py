"""The verb-tense CVAE's prior trade-off: Gaussian score against held-out NLL, from one checkpoint.

    python experiments/cvae_prior_frontier.py outputs/train/runs/<run>/checkpoints/best.ckpt
    python experiments/cvae_prior_frontier.py <ckpt> --weights 0 0.1 0.2 1 --draws 1000 --samples 20

For a model trained with ``prior=aggregate``, the prior is re-set for each weight a to
a N(0, I) + (1 - a) (aggregate posterior of the training forms); a = 1 is N(0, I) itself. For each
it prints the Gaussian score on ``--draws`` prior draws and the importance-weighted NLL (``--samples``
draws an example) of the val and test conversion pairs, as a Markdown table, and writes them to
``--json`` (default: ``cvae_prior_frontier.json`` in the checkpoint's run folder), which
``python -m vae_lab.report <run folder>`` plots.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments.restored import restored_model, run_folder  # noqa: E402
from vae_lab.metrics.likelihood import importance_weighted_nll  # noqa: E402
from vae_lab.metrics.tense import gaussian_score  # noqa: E402
from vae_lab.priors.mixture import AggregatePosteriorPrior  # noqa: E402


@torch.no_grad()
def mean_nll(model, loader, samples: int, seed: int = 0) -> float:
    torch.manual_seed(seed)
    total = count = 0.0
    for batch in loader:
        total += float(importance_weighted_nll(model, batch, samples, samples).sum())
        count += len(batch["tokens"])
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--weights", nargs="+", type=float, default=[0.0, 0.1, 0.2, 0.3, 0.5, 1.0])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=20, help="importance samples for the NLL")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None,
                        help="the figures as JSON (default: cvae_prior_frontier.json in the checkpoint's run folder)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, datamodule = restored_model(args.checkpoint)
    if not isinstance(model.prior, AggregatePosteriorPrior):
        sys.exit(f"{args.checkpoint}: trained with a prior other than prior=aggregate; nothing to trade off")
    model.prepare_evaluation(datamodule)
    print("| N(0, I) weight | Gaussian score | val NLL | test NLL |\n|---|---|---|---|")
    rows = []
    for weight in args.weights:
        if weight >= 1.0:
            model.prior.fitted.fill_(False)  # unfitted, the prior is N(0, I)
        else:
            model.prior.fitted.fill_(True)
            model.prior.normal_weight = weight
        score = gaussian_score(model.decode_prior(args.draws, torch.Generator().manual_seed(7)), model.lexicon)
        val = mean_nll(model, datamodule.val_dataloader(), args.samples)
        test = mean_nll(model, datamodule.test_dataloader(), args.samples)
        print(f"| {weight:g} | {score:.3f} | {val:.2f} | {test:.2f} |", flush=True)
        rows.append({"normal_weight": weight, "gaussian_score": score, "val_nll": val, "test_nll": test})
    path = args.json or run_folder(args.checkpoint) / "cvae_prior_frontier.json"
    path.write_text(json.dumps({"checkpoint": str(args.checkpoint), "draws": args.draws, "samples": args.samples,
                                "rows": rows}, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""The verb-tense CVAE's training frontier: held-out BLEU-4 against the Gaussian score from N(0, I), one
point per training run (what the objective, the latent size or free bits trade), beside the lab's target
(BLEU-4 >= 0.83 and Gaussian score >= 0.36 with z ~ N(0, I)).

    python experiments/cvae_training_frontier.py <run folders…> --out experiments/results/cvae_frontier

Each run folder holds a finished ``metrics.json`` and Hydra's ``.hydra/overrides.yaml``; the run's label is its
overrides without ``experiment=verb_tense`` and the run keys. Writes ``frontier.md`` (the table),
``frontier.json`` and ``frontier.png``, and copies each run's record (``metrics.json``, ``history.jsonl``,
``.hydra/``, ``samples.txt``, ``cvae_seen_heldout.json``; never checkpoints) to ``<out>/<run name>/``. Where a run
folder holds ``cvae_seen_heldout.json`` (experiments/cvae_seen_heldout.py), the table adds its N(0, I) draws'
score, how many distinct verbs the hits are and the most-hit verb's share of them: the lab's score counts
draws, so a decoder that sends most of N(0, I) to a few verbs scores high.

Where a run folder holds ``retest/metrics.json`` (``python -m vae_lab mode=test ckpt=<run>/checkpoints/best.ckpt
hydra.run.dir=<run>/retest paths.output_dir=<run>/retest``), the point's test metrics are the retest's and its
``tested`` column says so: runs made before the test drew its own Gaussian-score draws (``gaussian_seed + 1``)
and kept their checkpoint for ``val/gaussian_score_normal`` were tested on the draws that selected them."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import yaml

TARGET = {"test/bleu": 0.83, "test/gaussian_score_normal": 0.36}
COLUMNS = ("test/bleu", "test/exact_match", "test/gaussian_score_normal", "test/gaussian_score", "test/kl",
           "test/nll", "test/active_units")
RUN_KEYS = ("logger=", "torch_threads=", "hydra.", "paths.")
DEFAULT = "experiment=verb_tense"  # dropped from labels (another experiment, e.g. verb_tense_gaussian, is kept)
RECORD = ("metrics.json", "history.jsonl", "samples.txt", "reconstructions.txt", ".hydra", "cvae_seen_heldout.json",
          "retest/metrics.json", "retest/.hydra")
RETEST = Path("retest") / "metrics.json"


def label(folder: Path) -> str:
    overrides = yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text()) or []
    kept = [o for o in overrides if o != DEFAULT and not o.startswith(RUN_KEYS)]
    return " ".join(kept + prior_decoding(folder)) or DEFAULT


def prior_decoding(folder: Path) -> list[str]:
    """The effective settings of penalty=prior_decoding from the run's ``.hydra/config.yaml`` (the experiment's
    defaults changed while its settings were measured, so the overrides alone do not say them)."""
    config = yaml.safe_load((folder / ".hydra" / "config.yaml").read_text()) or {}
    term = (config.get("penalties") or {}).get("prior_decoding")
    if not term:
        return []
    draws = term.get("draws") or "batch"
    return [f"[prior_decoding: {term.get('assignment', 'posterior')}, {draws} draws, "
            f"{'paradigms' if config.get('dataset', {}).get('paradigms') else 'one target'}, start {term.get('start', 0)}]"]


def load(folder: Path) -> dict:
    retested = (folder / RETEST).is_file()
    path = folder / (RETEST if retested else "metrics.json")
    metrics = json.loads(path.read_text())
    missing = [key for key in COLUMNS if key not in metrics]
    if missing:
        raise SystemExit(f"{path}: lacks {missing}; is it a finished CVAE run?")
    point = {"run": folder.name, "overrides": label(folder), "tested": "retest" if retested else "run",
             **{key: metrics[key] for key in COLUMNS}}
    return {**point, **draw_columns(folder)}


def draw_columns(folder: Path) -> dict:
    path = folder / "cvae_seen_heldout.json"
    if not path.is_file():
        return {}
    draws = json.loads(path.read_text())["normal_draws"]
    hits = draws["hits_train"] + draws["hits_heldout"]
    top = draws["most_hit_counts"][0] / hits if draws.get("most_hit_counts") and hits else float("nan")
    return {"draws/count": draws["draws"], "draws/score": draws["gaussian_score"],
            "draws/distinct_verbs": draws.get("distinct_hits", float("nan")), "draws/top_verb_share": top}


def meets(point: dict) -> bool:
    return all(point[key] >= value for key, value in TARGET.items())


def table(points: list[dict]) -> str:
    head = ("| run | overrides | " + " | ".join(key.split("/")[1] for key in COLUMNS)
            + " | tested | N(0, I), more draws: score | distinct verbs hit | the most-hit verb's share | lab's target |")
    lines = [head, "|" + "---|" * (len(COLUMNS) + 7)]
    for p in sorted(points, key=lambda p: -p["test/gaussian_score_normal"]):
        values = " | ".join(f"{p[key]:.3f}" if key != "test/active_units" else f"{p[key]:.0f}" for key in COLUMNS)
        draws = (f"{p['draws/score']:.3f} ({p['draws/count']} draws) | {p['draws/distinct_verbs']} | "
                 f"{p['draws/top_verb_share']:.2f}" if "draws/score" in p else "— | — | —")
        lines.append(f"| {p['run']} | `{p['overrides']}` | {values} | {p.get('tested', 'run')} | {draws} | {'met' if meets(p) else 'missed'} |")
    return "\n".join(lines)


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    x_max = max(0.5, max(p["test/gaussian_score_normal"] for p in points) + 0.05)
    ax.fill_between([TARGET["test/gaussian_score_normal"], x_max], TARGET["test/bleu"], 1, color="0.92")
    ax.axhline(TARGET["test/bleu"], color="0.5", lw=0.8, ls="--")
    ax.axvline(TARGET["test/gaussian_score_normal"], color="0.5", lw=0.8, ls="--")
    for p in points:
        ax.scatter(p["test/gaussian_score_normal"], p["test/bleu"], s=28)
        ax.annotate(p["run"], (p["test/gaussian_score_normal"], p["test/bleu"]), fontsize=6,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("Gaussian score, z ~ N(0, I) (100 draws x 4 tenses)")
    ax.set_ylabel("held-out BLEU-4")
    ax.set_xlim(0, x_max)
    ax.set_ylim(0, 1)
    ax.set_title("verb-tense CVAE: what training trades (the lab's target: the dashed corner)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("experiments/results/cvae_frontier"))
    args = parser.parse_args(argv)
    points = []
    for folder in args.runs:
        if not (folder / "metrics.json").is_file():
            print(f"skipped {folder}: no metrics.json", file=sys.stderr)
            continue
        points.append(load(folder))
        target = args.out / folder.name
        if target.resolve() == folder.resolve():  # a point already kept there
            continue
        target.mkdir(parents=True, exist_ok=True)
        for name in RECORD:
            source = folder / name
            if source.is_dir():
                shutil.copytree(source, target / name, dirs_exist_ok=True)
            elif source.is_file():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / name)
    if not points:
        raise SystemExit("no finished run among the folders given")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "frontier.md").write_text(table(points) + "\n")
    (args.out / "frontier.json").write_text(json.dumps(points, indent=1) + "\n")
    plot(points, args.out / "frontier.png")
    print(table(points))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One command per results table:

    python -m vae_lab.report outputs/train/multiruns/<sweep> [more folders] [--out report.md]

Collects every run under the folders (a ``metrics.json`` beside its ``.hydra/config.yaml`` and
``.hydra/overrides.yaml``), groups them by model family and writes ``report.md`` (default: in the first
folder) with one table per family: a column per override that varies within the family, then the
metrics present (``--keys``). PNG plots go beside it, each only when its data exist:

- ``learning_curves_<family>.png``: each run's ``history.jsonl`` (vae_lab.callbacks.MetricHistoryWriter);
- ``nll_vs_<key>_<family>.png``: test NLL against each numeric override that varies within a family
  (k, model.latent_dim, beta), a line per value of the other varying overrides;
- ``cvae_prior_frontier.png``: Gaussian score against held-out NLL from ``cvae_prior_frontier.json``
  (``experiments/cvae_prior_frontier.py``);
- ``log_z_error_vs_time.png``: the RBM samplers' log Z error against wall time from ``bench_rbm.json``
  (``experiments/bench_rbm.py``).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

METRIC_KEYS = ["test/nll", "test/ppl", "test/elbo", "test/kl", "test/rec", "test/bleu", "test/exact_match",
               "test/gaussian_score", "test/gaussian_score_normal", "test/active_units", "test/mi", "test/log_z",
               "val/nll"]
CURVE_KEYS = ["train/loss", "val/nll", "val/kl"]
LOCATION_KEYS = ("paths.", "hydra.", "run_dir")  # where a run was written, not what it is


@dataclass
class Run:
    """One run folder: its final metrics, its command-line overrides (in order) and composed config."""

    folder: Path
    metrics: dict[str, float]
    overrides: dict[str, str] = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    @property
    def family(self) -> str:
        """The model class (``SentenceVAE``, ``TenseCVAE``, ``ImageVAE``), or ``runs`` without a config."""
        target = (self.config.get("model") or {}).get("_target_", "")
        return target.rsplit(".", 1)[-1] or "runs"

    @property
    def label(self) -> str:
        return " ".join(f"{key}={value}" for key, value in self.overrides.items()) or str(self.folder)

    def history(self) -> list[dict]:
        path = self.folder / "history.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def read_overrides(folder: Path) -> dict[str, str]:
    """``.hydra/overrides.yaml`` as {key: value}, without the keys that only say where the run was written."""
    path = folder / ".hydra" / "overrides.yaml"
    overrides = {}
    for line in (yaml.safe_load(path.read_text()) or []) if path.is_file() else []:
        key, _, value = str(line).partition("=")
        if not key.lstrip("+~").startswith(LOCATION_KEYS):
            overrides[key] = value
    return overrides


def load_runs(roots: list[Path]) -> list[Run]:
    """Every run (a folder with ``metrics.json``) under ``roots``, in path order."""
    runs = []
    for root in roots:
        for path in sorted(Path(root).glob("**/metrics.json")):
            config_path = path.parent / ".hydra" / "config.yaml"
            config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
            runs.append(Run(path.parent, json.loads(path.read_text()), read_overrides(path.parent), config or {}))
    return runs


def check_folders(roots: list[Path]) -> None:
    missing = [str(root) for root in roots if not Path(root).is_dir()]
    if missing:
        raise SystemExit(f"error: no folder {', '.join(missing)}: pass the outputs folder of a run or a sweep")


def checked_runs(roots: list[Path]) -> list[Run]:
    """``load_runs``, or one line (SystemExit) for a missing folder or a folder without runs."""
    check_folders(roots)
    runs = load_runs(roots)
    if not runs:
        raise SystemExit(f"error: no metrics.json under {', '.join(map(str, roots))}: nothing to collect")
    return runs


def command_of(root: Path) -> str | None:
    """The command that made a sweep folder (its ``multirun.yaml``) or a run folder (``.hydra/``), if known."""
    sweep, run = Path(root) / "multirun.yaml", Path(root) / ".hydra" / "hydra.yaml"
    if not sweep.is_file() and not run.is_file():
        return None
    overrides = yaml.safe_load((sweep if sweep.is_file() else run).read_text())["hydra"]["overrides"]
    arguments = [o for o in overrides.get("hydra") or [] if o != "hydra.mode=MULTIRUN"] + list(overrides["task"])
    return " ".join(["python -m vae_lab", *(["-m"] if sweep.is_file() else []), *map(shlex.quote, arguments)])


def varying_keys(runs: list[Run]) -> list[str]:
    """The override keys whose value differs between the runs (absent counts as a value), first-seen order."""
    keys = list(dict.fromkeys(key for run in runs for key in run.overrides))
    return [key for key in keys if len({run.overrides.get(key) for run in runs}) > 1]


def format_value(value) -> str:
    """4 significant digits without an exponent for |value| >= 1 (91.63, 1067); counts as integers."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "–"
    if not math.isfinite(value) or value == 0:
        return str(value)
    if float(value).is_integer() and abs(value) < 1e6:
        return str(int(value))
    if abs(value) >= 1:
        return f"{value:.{max(0, 3 - int(math.floor(math.log10(abs(value)))))}f}"
    return f"{value:.4g}"


def natural_key(text: str | None) -> tuple:
    """Sort ``k=5`` before ``k=10`` and a missing value first."""
    parts = re.split(r"(\d+(?:\.\d+)?)", text or "")
    return tuple((0, float(part), "") if re.fullmatch(r"\d+(?:\.\d+)?", part) else (1, 0.0, part) for part in parts)


def markdown_table(runs: list[Run], keys: list[str], columns: list[str] | None = None) -> str:
    """One row per run: the override ``columns`` (None: one ``run`` column of all its overrides), then ``keys``."""
    header = columns if columns is not None else ["run"]
    rows = ["| " + " | ".join(header + keys) + " |", "|" + "---|" * (len(header) + len(keys))]
    for run in runs:
        cells = ([run.overrides.get(column, "–") for column in columns] if columns is not None else [run.label])
        rows.append("| " + " | ".join(cells + [format_value(run.metrics.get(key)) for key in keys]) + " |")
    return "\n".join(rows)


def snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def line_style(index: int, points: int) -> dict:
    """Distinct dashes and markers, so runs whose curves coincide stay visible."""
    return {"linestyle": ["-", "--", ":", "-."][index % 4], "marker": "os^vDP"[index % 6] if points < 30 else None,
            "markersize": 4, "linewidth": 1.2}


def plot_learning_curves(runs: list[Run], columns: list[str], path: Path) -> bool:
    """One panel per key of CURVE_KEYS logged by any run, one line per run, against the training step."""
    histories = [(run, run.history()) for run in runs]
    keys = [key for key in CURVE_KEYS if any(key in row for _, history in histories for row in history)]
    if not keys:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(4.6 * len(keys), 3.6 + 0.2 * len(runs)), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for index, (run, history) in enumerate(histories):
            points = [(row["step"], row[key]) for row in history if key in row]
            label = " ".join(f"{c}={run.overrides.get(c, '–')}" for c in columns) or run.folder.name
            ax.plot(*zip(*points) if points else ([], []), label=label, **line_style(index, len(points)))
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.grid(True, linewidth=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.03 * math.ceil(len(labels) / 4), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def numeric(text: str | None) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def plot_nll_against(runs: list[Run], columns: list[str], swept: str, path: Path, key: str = "test/nll") -> bool:
    """``key`` against the numeric override ``swept`` (k, model.latent_dim, beta), one line per combination
    of the other varying overrides; only when ``swept`` takes two values or more."""
    points = [(run, numeric(run.overrides.get(swept))) for run in runs]
    points = [(run, x) for run, x in points if x is not None and isinstance(run.metrics.get(key), (int, float))]
    if len({x for _, x in points}) < 2:
        return False
    lines: dict[str, list[tuple[float, float]]] = {}
    for run, x in points:
        label = " ".join(f"{c}={run.overrides.get(c, '–')}" for c in columns if c != swept) or key
        lines.setdefault(label, []).append((x, run.metrics[key]))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    for index, (label, values) in enumerate(lines.items()):
        ax.plot(*zip(*sorted(values)), label=label, **line_style(index, len(values)))
    values = sorted({x for _, x in points})
    if values[0] > 0 and values[-1] / values[0] >= 4:
        ax.set_xscale("log", base=2)
    ax.set_xticks(values, [f"{x:g}" for x in values])
    ax.set_xlabel(swept + (" (posterior samples in the training objective)" if swept == "k" else ""))
    ax.set_ylabel(f"{key} (nats)")
    ax.grid(True, which="both", linewidth=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_prior_frontier(frontier: dict, path: Path) -> None:
    """The CVAE's Gaussian score against held-out NLL, a point per share of N(0, I) in the prior."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    rows = frontier["rows"]
    for split, style in (("test_nll", "o-"), ("val_nll", "s--")):
        ax.plot([r["gaussian_score"] for r in rows], [r[split] for r in rows], style, label=split.replace("_", " "))
    for row in rows:
        ax.annotate(f"{row['normal_weight']:g}", (row["gaussian_score"], row["test_nll"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=7)
    ax.set_xlabel(f"Gaussian score ({frontier['draws']} prior draws)")
    ax.set_ylabel("NLL per pair (nats)")
    ax.set_title("CVAE prior: a N(0, I) + (1 - a) aggregate posterior; labels: a", fontsize=9)
    ax.grid(True, linewidth=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_log_z_error(error_vs_time: dict, path: Path) -> None:
    """RMS log Z error of each sampler against its wall time per estimate (log-log)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    for name, points in error_vs_time["curves"].items():
        ax.loglog([p["seconds"] for p in points], [p["rms_error"] for p in points], marker="o", label=name)
        for p in points:
            ax.annotate(str(p["temperatures"]), (p["seconds"], p["rms_error"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
    ax.set_xlabel("wall time per log Z estimate (s)")
    ax.set_ylabel(f"RMS error of log Z (nats, {error_vs_time['seeds']} seeds)")
    ax.set_title(f"{error_vs_time['rbm']}; labels: temperatures", fontsize=9)
    ax.grid(True, which="both", linewidth=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def family_section(family: str, runs: list[Run], keys: list[str], folder: Path) -> list[str]:
    columns = varying_keys(runs)
    runs = sorted(runs, key=lambda run: tuple(natural_key(run.overrides.get(c)) for c in columns))
    present = [key for key in keys if any(isinstance(run.metrics.get(key), (int, float)) for run in runs)]
    common = [f"{key}={value}" for key, value in runs[0].overrides.items()
              if key not in columns and all(run.overrides.get(key) == value for run in runs)]
    lines = [f"## {family} ({len(runs)} run{'s' * (len(runs) > 1)})", ""]
    if common:
        lines += [f"Common overrides: `{' '.join(common)}`", ""]
    lines += [markdown_table(runs, present, columns), ""]
    path = folder / f"learning_curves_{snake(family)}.png"
    if plot_learning_curves(runs, columns, path):
        lines += [f"![learning curves]({path.name})", ""]
    for swept in columns:  # test NLL against each numeric override the family varies: k, latent size, β
        path = folder / f"nll_vs_{re.sub(r'[^A-Za-z0-9]+', '_', swept)}_{snake(family)}.png"
        if plot_nll_against(runs, columns, swept, path):
            lines += [f"![test NLL against {swept}]({path.name})", ""]
    return lines


def frontier_section(path: Path, folder: Path) -> list[str]:
    frontier = json.loads(path.read_text())
    plot_prior_frontier(frontier, folder / "cvae_prior_frontier.png")
    rows = [f"| {r['normal_weight']:g} | {r['gaussian_score']:.3f} | {r['val_nll']:.2f} | {r['test_nll']:.2f} |"
            for r in frontier["rows"]]
    return [f"## CVAE prior frontier (`{path}`)", "", f"Checkpoint `{frontier['checkpoint']}`, {frontier['draws']} "
            f"draws, {frontier['samples']} importance samples an example.", "",
            "| N(0, I) weight | Gaussian score | val NLL | test NLL |", "|---|---|---|---|", *rows, "",
            "![CVAE prior frontier](cvae_prior_frontier.png)", ""]


def log_z_section(path: Path, folder: Path) -> list[str]:
    error_vs_time = json.loads(path.read_text())["error_vs_time"]
    plot_log_z_error(error_vs_time, folder / "log_z_error_vs_time.png")
    rows = [f"| {name} | {p['temperatures']} | {p['seconds']:.3g} | {p['rms_error']:.4f} |"
            for name, points in error_vs_time["curves"].items() for p in points]
    return [f"## RBM log Z error against wall time (`{path}`)", "",
            f"{error_vs_time['rbm']}, exact log Z {error_vs_time['exact_log_z']:.3f}.", "",
            "| sampler | temperatures | s per estimate | RMS error (nats) |", "|---|---|---|---|", *rows, "",
            "![log Z error against wall time](log_z_error_vs_time.png)", ""]


def write_report(roots: list[Path], out: Path, keys: list[str] = METRIC_KEYS) -> Path:
    """report.md at ``out`` (and its plots beside it) from the runs and result files under ``roots``."""
    check_folders(roots)
    runs = load_runs(roots)
    frontiers = sorted(path for root in roots for path in Path(root).glob("**/cvae_prior_frontier.json"))
    benches = sorted(path for root in roots for path in Path(root).glob("**/bench_rbm.json"))
    if not runs and not frontiers and not benches:
        raise SystemExit(f"error: no metrics.json, cvae_prior_frontier.json or bench_rbm.json under "
                         f"{', '.join(map(str, roots))}: nothing to report")
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "python -m vae_lab.report " + " ".join(shlex.quote(str(root)) for root in roots)
    lines = ["# Report", "", f"`{command}`, over {len(runs)} run{'s' * (len(runs) != 1)} in:", ""]
    for root in roots:
        made_by = command_of(root)
        lines.append(f"- `{root}`" + (f", made by `{made_by}`" if made_by else ""))
    lines.append("")
    families: dict[str, list[Run]] = {}
    for run in runs:
        families.setdefault(run.family, []).append(run)
    for family, members in families.items():
        lines += family_section(family, members, keys, out.parent)
    for path in frontiers:
        lines += frontier_section(path, out.parent)
    for path in benches:
        if "error_vs_time" in json.loads(path.read_text()):
            lines += log_z_section(path, out.parent)
    out.write_text("\n".join(lines))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vae_lab.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roots", nargs="+", type=Path, help="outputs folders of runs or sweeps, or result folders")
    parser.add_argument("--out", type=Path, default=None, help="the report (default: <first folder>/report.md)")
    parser.add_argument("--keys", nargs="+", default=METRIC_KEYS, help="metric columns, where present")
    args = parser.parse_args(argv)
    out = write_report(args.roots, args.out or args.roots[0] / "report.md", args.keys)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

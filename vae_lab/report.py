"""One command per results table:

    python -m vae_lab.report outputs/train/multiruns/<sweep> [more folders] [--out report.md]

Collects every run under the folders (a ``metrics.json`` beside its ``.hydra/config.yaml``,
``.hydra/hydra.yaml`` and ``.hydra/overrides.yaml``), groups them by model family and writes ``report.md``
(default: in the first folder) with one table per family: a column per setting that varies within the
family (a config group's choice from ``hydra.yaml``, e.g. the dataset a ``model=dvae…`` picks by its
defaults, or a plain-key override such as ``k=5``), then the metrics present (``--keys``). A folder that
looks like a run (``.hydra/``, ``history.jsonl`` or ``checkpoints/``) but cannot be reported (no
``metrics.json``, or an unreadable one) is one stderr line, ``report: skipped <folder>: <why>``; a
``--keys`` key that no run has stops the report with one line naming the nearest keys (exit 2).
PNG plots go beside it, each only when its data exist:

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
import difflib
import functools
import json
import math
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vae_lab.errors import ConfigError, UserError
from vae_lab.run_folder import busy, holds_checkpoints

METRIC_KEYS = ["test/nll", "test/ppl", "test/elbo", "test/kl", "test/rec", "test/bleu", "test/exact_match",
               "test/gaussian_score", "test/gaussian_score_normal", "test/active_units", "test/mi", "test/log_z",
               "val/nll"]
CURVE_KEYS = ["train/loss", "val/nll", "val/kl"]
LOCATION_KEYS = ("paths.", "hydra.", "run_dir")  # where a run was written, not what it is
RUN_MARKS = (".hydra", "history.jsonl", "checkpoints")  # a folder holding one of these is a run's
CONF = Path(__file__).resolve().parent.parent / "conf"


@dataclass
class Run:
    """One run folder: its final metrics, its command-line overrides (in order), composed config and
    config-group choices (``hydra.runtime.choices``, without Hydra's own groups)."""

    folder: Path
    metrics: dict[str, float]
    overrides: dict[str, str] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    choices: dict[str, str | None] = field(default_factory=dict)

    @property
    def family(self) -> str:
        """The model class (``SentenceVAE``, ``TenseCVAE``, ``ImageVAE``), or ``runs`` without a config."""
        target = (self.config.get("model") or {}).get("_target_", "")
        return target.rsplit(".", 1)[-1] or "runs"

    @property
    def settings(self) -> dict[str, str]:
        """What sets the run apart, the report's columns: each config group's choice (from ``hydra.yaml``,
        so the dataset a model's defaults pick counts too) and each plain-key override (``k=5``,
        ``model.latent_dim=4``); the command line's order first, then the other groups'. Hydra's own groups
        (``hydra/launcher=joblib``) say how the run was launched, not what it is: no setting."""
        found = {}
        for key, value in self.overrides.items():
            group = key.lstrip("+~")
            if group.startswith("hydra/"):
                continue
            if group not in self.choices:
                found[key] = value
            elif self.choices[group] is not None:
                found[group] = self.choices[group]
        for group, choice in self.choices.items():
            if choice is not None:
                found.setdefault(group, choice)
        return found

    @property
    def label(self) -> str:
        return " ".join(f"{key}={value}" for key, value in self.overrides.items()) or str(self.folder)

    def history(self) -> list[dict]:
        path = self.folder / "history.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


class SkippedRun(Exception):
    """A folder that looks like a run but cannot be reported; the message says why, in one line."""


def one_line(text) -> str:
    return " ".join(str(text).split())


def read_yaml(folder: Path, name: str, kind: type):
    """``<folder>/.hydra/<name>`` parsed (None when absent), or SkippedRun saying why it cannot be used."""
    path = folder / ".hydra" / name
    if not path.is_file():
        return None
    try:
        value = yaml.safe_load(path.read_text())
    except OSError as error:
        raise SkippedRun(f".hydra/{name} cannot be read ({error.strerror or error})") from None
    except ValueError as error:  # not UTF-8
        raise SkippedRun(f".hydra/{name} is not text ({one_line(error)})") from None
    except yaml.YAMLError as error:
        mark, problem = getattr(error, "problem_mark", None), getattr(error, "problem", None)
        where = f"line {mark.line + 1}: {problem}" if mark is not None and problem else one_line(error)
        raise SkippedRun(f".hydra/{name} is not valid YAML ({where})") from None
    if value is not None and not isinstance(value, kind):
        raise SkippedRun(f".hydra/{name} holds a {type(value).__name__}, not a {kind.__name__}")
    return value


def read_overrides(folder: Path) -> dict[str, str]:
    """``.hydra/overrides.yaml`` as {key: value}, without the keys that only say where the run was written."""
    overrides = {}
    for line in read_yaml(folder, "overrides.yaml", list) or []:
        key, _, value = str(line).partition("=")
        if not key.lstrip("+~").startswith(LOCATION_KEYS):
            overrides[key] = value
    return overrides


@functools.cache
def derived_groups() -> frozenset[str]:
    """The groups conf/train.yaml's defaults pick by interpolation (``debug_model: ${debug}_${model}``):
    their choice follows from the others', so it is no column of its own."""
    try:
        defaults = (yaml.safe_load((CONF / "train.yaml").read_text()) or {}).get("defaults") or []
    except (OSError, ValueError, yaml.YAMLError, AttributeError):
        return frozenset()
    return frozenset(key.split()[-1] for entry in defaults if isinstance(entry, dict)
                     for key, value in entry.items() if isinstance(value, str) and "${" in value)


def read_choices(folder: Path) -> dict[str, str | None]:
    """``hydra.runtime.choices`` of ``.hydra/hydra.yaml`` ({group: option}, None for a group left empty),
    without Hydra's own groups (``hydra``, ``hydra/…``), ``paths`` and the derived groups; {} without one."""
    hydra = (read_yaml(folder, "hydra.yaml", dict) or {}).get("hydra")
    runtime = hydra.get("runtime") if isinstance(hydra, dict) else None
    choices = runtime.get("choices") if isinstance(runtime, dict) else None
    if not isinstance(choices, dict):
        return {}
    return {str(group): None if option is None else str(option) for group, option in choices.items()
            if not (f"{group}.".startswith(LOCATION_KEYS) or str(group).startswith("hydra/")
                    or group in derived_groups())}


def missing_metrics(folder: Path, overrides: dict[str, str], config: dict) -> str:
    """Why a run folder has no ``metrics.json``, and how to get one."""
    mode = str(overrides.get("mode", config.get("mode", "train")))
    command = command_of(folder)
    again = f"; run it again with {command}" if command else ""
    if mode not in ("train", "test"):
        return f"no metrics.json (a mode={mode} run writes its outputs, not metrics)"
    try:
        holder = busy(folder)
    except OSError:
        holder = None
    if holder is not None:
        return f"no metrics.json yet (the run is still going: {holder})"
    if mode == "test":
        return f"no metrics.json (the test did not finish{again})"
    if (folder / "checkpoints" / "last.ckpt").is_file():
        return (f"no metrics.json (the run did not finish; resume it with python -m vae_lab mode=train "
                f"run_dir={shlex.quote(str(folder))} ckpt=last)")
    return f"no metrics.json (the run stopped before its first checkpoint{again})"


def read_metrics(folder: Path) -> dict:
    """``metrics.json`` as a dict, or SkippedRun saying why it cannot be used."""
    test = (f"; test its checkpoint again with python -m vae_lab mode=test run_dir={shlex.quote(str(folder))}"
            if holds_checkpoints(folder) else "")
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
    except OSError as error:
        raise SkippedRun(f"metrics.json cannot be read ({error.strerror or error})") from None
    except ValueError as error:  # not JSON, or not UTF-8
        raise SkippedRun(f"metrics.json is not valid JSON ({one_line(error)}){test}") from None
    if not isinstance(metrics, dict):
        raise SkippedRun(f"metrics.json holds a JSON {type(metrics).__name__}, not an object of metrics{test}")
    return metrics


def read_run(folder: Path) -> Run:
    """The run of ``folder``, or SkippedRun saying why it cannot be reported."""
    overrides, config = read_overrides(folder), read_yaml(folder, "config.yaml", dict) or {}
    choices = read_choices(folder)
    if overrides.get("mode", "train") != "train":  # a checkpoint's experiment ran, not what hydra.yaml composed
        choices = {}
    if not (folder / "metrics.json").is_file():
        raise SkippedRun(missing_metrics(folder, overrides, config))
    return Run(folder, read_metrics(folder), overrides, config, choices)


def run_folders(root: Path) -> list[Path]:
    """The folders under ``root`` (itself included) that hold a ``metrics.json`` or look like a run's
    (``.hydra/``, ``history.jsonl``, ``checkpoints/``), in the order of their ``metrics.json`` paths."""
    found = {path.parent for name in ("metrics.json", *RUN_MARKS) for path in Path(root).glob(f"**/{name}")}
    return sorted(found, key=lambda folder: folder / "metrics.json")


def scan_runs(roots: list[Path]) -> tuple[list[Run], list[tuple[Path, str]]]:
    """The runs under ``roots`` in path order, and the run-like folders skipped, each with why."""
    runs, skipped = [], []
    for root in roots:
        for folder in run_folders(Path(root)):
            try:
                runs.append(read_run(folder))
            except SkippedRun as why:
                skipped.append((folder, str(why)))
    return runs, skipped


def load_runs(roots: list[Path]) -> list[Run]:
    """Every run (a folder with a readable ``metrics.json``) under ``roots``, in path order; each folder that
    looks like a run but is skipped is one stderr line, ``report: skipped <folder>: <why>``."""
    runs, skipped = scan_runs(roots)
    for folder, why in skipped:
        print(f"report: skipped {folder}: {why}", file=sys.stderr)
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
    try:
        overrides = yaml.safe_load((sweep if sweep.is_file() else run).read_text())["hydra"]["overrides"]
        arguments = [o for o in overrides.get("hydra") or [] if o != "hydra.mode=MULTIRUN"] + list(overrides["task"])
    except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError, AttributeError):  # an unreadable record
        return None
    return " ".join(["python -m vae_lab", *(["-m"] if sweep.is_file() else []), *map(shlex.quote, arguments)])


def varying_keys(runs: list[Run]) -> list[str]:
    """The settings (group choices, plain-key overrides) whose value differs between the runs, first-seen
    order. An absent override counts as a value (the default); so does a group left empty, but not a group a
    run has no record of (no ``hydra.yaml``, an older config without that group, an evaluation mode)."""
    groups = {group for run in runs for group in run.choices}
    keys = list(dict.fromkeys(key for run in runs for key in run.settings))
    return [key for key in keys
            if len({run.settings.get(key) for run in runs
                    if key not in groups or key in run.choices or key in run.settings}) > 1]


def check_keys(keys: list[str], runs: list[Run]) -> None:
    """A ConfigError (one line, exit 2) naming the ``--keys`` no run's metrics has, and the nearest keys."""
    known = sorted({key for run in runs for key in run.metrics})
    unknown = [key for key in dict.fromkeys(keys) if key not in known]
    if not unknown:
        return
    near = list(dict.fromkeys(match for key in unknown for match in difflib.get_close_matches(key, known, n=3,
                                                                                             cutoff=0.5)))
    hint = f"; did you mean {' or '.join(near)}?" if near else ""
    raise ConfigError(f"--keys {' '.join(unknown)}: no run has {'it' if len(unknown) == 1 else 'them'}{hint} "
                      f"(keys: {', '.join(known)})")


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
        cells = ([run.settings.get(column, "–") for column in columns] if columns is not None else [run.label])
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


def curve_label(run: Run, columns: list[str]) -> str:
    """A run's line in a plot: the varying settings it has (those it leaves at the default are left out),
    or its folder's name when it has none."""
    return " ".join(f"{c}={run.settings[c]}" for c in columns if c in run.settings) or run.folder.name


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
            ax.plot(*zip(*points) if points else ([], []), label=curve_label(run, columns),
                    **line_style(index, len(points)))
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.grid(True, linewidth=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    # as many legend columns as the figure's width holds at ~15 characters an inch of 7-point text
    ncol = max(1, min(len(labels), 4, int(fig.get_figwidth() * 15 // max(map(len, labels)))))
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.03 * math.ceil(len(labels) / ncol), 1, 1))
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
    points = [(run, numeric(run.settings.get(swept))) for run in runs]
    points = [(run, x) for run, x in points if x is not None and isinstance(run.metrics.get(key), (int, float))]
    if len({x for _, x in points}) < 2:
        return False
    lines: dict[str, list[tuple[float, float]]] = {}
    for run, x in points:
        label = " ".join(f"{c}={run.settings.get(c, '–')}" for c in columns if c != swept) or key
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
    runs = sorted(runs, key=lambda run: tuple(natural_key(run.settings.get(c)) for c in columns))
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


def write_report(roots: list[Path], out: Path, keys: list[str] | None = None) -> Path:
    """report.md at ``out`` (and its plots beside it) from the runs and result files under ``roots``; the
    metric columns are ``keys`` (each must be in some run's metrics: a ConfigError otherwise), or those of
    METRIC_KEYS present."""
    check_folders(roots)
    runs = load_runs(roots)
    if keys is None:
        keys = METRIC_KEYS
    elif runs:
        check_keys(keys, runs)
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
    parser.add_argument("--keys", nargs="+", default=None,
                        help="metric columns, each a key of some run's metrics.json (default: those of "
                             f"{' '.join(METRIC_KEYS)} present)")
    args = parser.parse_args(argv)
    try:
        out = write_report(args.roots, args.out or args.roots[0] / "report.md", args.keys)
    except UserError as error:  # as python -m vae_lab tells it (vae_lab/__main__.py): one line, its exit code
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""``python -m vae_lab.report``: one table per model family from a sweep's runs (the overrides that vary
are its columns, the cells are metrics.json's values) and PNG plots beside it, only where their data
exist: learning curves (history.jsonl), NLL against a numeric override, the CVAE prior frontier, the
RBM samplers' log Z error against time."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import fcntl

import pytest
import yaml
from PIL import Image

from vae_lab.report import format_value, main, write_report

ROOT = Path(__file__).resolve().parents[1]


def python(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def tables(report: str) -> dict[str, list[dict[str, str]]]:
    """Each ``## <title>`` section's first Markdown table, as rows of {column: cell}."""
    def cells(line: str) -> list[str]:
        return [cell.strip() for cell in line.strip().strip("|").split("|")]

    found, title, lines = {}, None, report.splitlines()
    for index, line in enumerate(lines[:-1]):
        if line.startswith("## "):
            title = line[3:]
        elif line.startswith("|") and title not in found and set(lines[index + 1]) <= set("|-"):
            header, rows = cells(line), []
            for row in lines[index + 2:]:
                if not row.startswith("|"):
                    break
                rows.append(dict(zip(header, cells(row))))
            found[title] = rows
    return found


def assert_png(path: Path) -> None:
    with Image.open(path) as image:
        image.verify()
        assert image.format == "PNG" and image.size[0] > 200 and image.size[1] > 200


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A real two-job sweep (two validations each), then the report of its folder."""
    tmp = tmp_path_factory.mktemp("report")
    result = python("-m", "vae_lab", "-m", "debug=fast", "logger=none", "torch_threads=1", "trainer.max_epochs=2",
                    "annealing=linear,cyclical", f"hydra.sweep.dir={tmp / 'sweep'}", cwd=tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    result = python("-m", "vae_lab.report", str(tmp / "sweep"), cwd=tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "sweep"


def test_a_sweep_gives_one_table_whose_columns_are_its_varying_overrides(sweep):
    report = (sweep / "report.md").read_text()
    assert (f"- `{sweep}`, made by `python -m vae_lab -m hydra.sweep.dir={sweep} debug=fast logger=none "
            "torch_threads=1 trainer.max_epochs=2 annealing=linear,cyclical`") in report
    assert "Common overrides: `debug=fast logger=none torch_threads=1 trainer.max_epochs=2`" in report
    (rows,) = tables(report).values()
    assert list(rows[0])[:2] == ["annealing", "test/nll"]
    assert {"test/ppl", "test/elbo", "test/kl", "test/bleu", "test/active_units"} <= set(rows[0])
    by_annealing = {row["annealing"]: row for row in rows}
    assert set(by_annealing) == {"linear", "cyclical"}
    for job in ("0", "1"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        annealing = (sweep / job / ".hydra" / "overrides.yaml").read_text().split("annealing=")[1].split()[0]
        for key, cell in by_annealing[annealing].items():
            if key != "annealing":
                assert cell == format_value(metrics[key]), key
                assert float(cell) == pytest.approx(metrics[key], rel=1e-3, abs=1e-9), key


def test_the_learning_curves_come_from_each_runs_history(sweep):
    assert_png(sweep / "learning_curves_sentence_vae.png")
    assert "![learning curves](learning_curves_sentence_vae.png)" in (sweep / "report.md").read_text()
    assert not list(sweep.glob("nll_vs_*.png"))  # nothing numeric varies
    for job in ("0", "1"):
        history = [json.loads(line) for line in (sweep / job / "history.jsonl").read_text().splitlines()]
        validations = [row for row in history if "val/nll" in row]
        assert [row["epoch"] for row in validations] == [0, 1]
        final = json.loads((sweep / job / "metrics.json").read_text())["val/nll"]
        assert validations[-1]["val/nll"] == pytest.approx(final, rel=1e-6)  # as logged: float32
        assert len([row for row in history if "train/loss" in row]) == 10  # 5 steps an epoch, each logged


def fake_run(folder: Path, overrides: list[str], metrics: dict | None, target: str, history: list[dict] = (),
             choices: dict | None = None) -> None:
    """A run folder as a run leaves it: ``.hydra/`` (``hydra.yaml`` only with ``choices``), ``metrics.json``
    (none for None) and ``history.jsonl``."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {line}\n" for line in overrides))
    (folder / ".hydra" / "config.yaml").write_text(f"model:\n  _target_: {target}\n  latent_dim: 8\n")
    if choices is not None:
        hydra = {"hydra": {"overrides": {"hydra": ["hydra.mode=RUN"], "task": overrides},
                           "runtime": {"choices": choices}}}
        (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra, sort_keys=False))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    if history:
        (folder / "history.jsonl").write_text("".join(json.dumps(row) + "\n" for row in history))


def test_families_get_their_own_tables_and_nll_against_k(tmp_path):
    image, text = "vae_lab.models.image_vae.ImageVAE", "vae_lab.models.sentence_vae.SentenceVAE"
    for index, (model, k, nll) in enumerate([("dvaes_power", 1, 93.34), ("dvaes_power", 5, 91.63),
                                             ("dvaepp_power", 1, 93.09), ("dvaepp_power", 5, 92.5)]):
        fake_run(tmp_path / "dvae" / str(index), ["experiment=dvae_cpu_table", f"model={model}", f"k={k}",
                                                  "paths.output_dir=/elsewhere"],
                 {"test/nll": nll, "val/nll": nll + 1.6, "test/elbo": -100.25, "test/log_z": 31.4159}, image)
    fake_run(tmp_path / "text", ["debug=fast"], {"test/nll": 146.42, "test/ppl": 1066.9, "test/bleu": 0.0002},
             text, history=[{"step": 5, "epoch": 0, "val/nll": 160.0}, {"step": 10, "epoch": 1, "val/nll": 150.0}])
    out = write_report([tmp_path], tmp_path / "out" / "report.md")
    found = tables(out.read_text())
    assert set(found) == {"ImageVAE (4 runs)", "SentenceVAE (1 run)"}
    dvae = found["ImageVAE (4 runs)"]
    assert list(dvae[0]) == ["model", "k", "test/nll", "test/elbo", "test/log_z", "val/nll"]  # paths.… is no column
    assert [(row["model"], row["k"], row["test/nll"]) for row in dvae] == [
        ("dvaepp_power", "1", "93.09"), ("dvaepp_power", "5", "92.50"), ("dvaes_power", "1", "93.34"),
        ("dvaes_power", "5", "91.63")]
    assert dvae[0]["test/log_z"] == "31.42" and dvae[0]["test/elbo"] == "-100.2"
    assert list(found["SentenceVAE (1 run)"][0]) == ["test/nll", "test/ppl", "test/bleu"]
    assert sorted(path.name for path in out.parent.glob("*.png")) == [
        "learning_curves_sentence_vae.png", "nll_vs_k_image_vae.png"]  # the DVAE runs have no history
    for path in out.parent.glob("*.png"):
        assert_png(path)


def test_the_cvae_prior_frontier_is_plotted_from_its_script(tmp_path):
    """A debug=fast CVAE with prior=aggregate, experiments/cvae_prior_frontier.py on its checkpoint
    (which writes cvae_prior_frontier.json to the run folder), then the report of the run folder."""
    run = tmp_path / "run"
    result = python("-m", "vae_lab", "experiment=verb_tense", "debug=fast", "prior=aggregate", "logger=none",
                    "torch_threads=1", f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    result = python(str(ROOT / "experiments" / "cvae_prior_frontier.py"), str(run / "checkpoints" / "best.ckpt"),
                    "--weights", "0", "0.5", "1", "--draws", "20", "--samples", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    frontier = json.loads((run / "cvae_prior_frontier.json").read_text())
    assert [row["normal_weight"] for row in frontier["rows"]] == [0, 0.5, 1]
    result = python("-m", "vae_lab.report", str(run), "--out", str(tmp_path / "report" / "report.md"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    found = tables((tmp_path / "report" / "report.md").read_text())
    assert "gaussian_score" in " ".join(found["TenseCVAE (1 run)"][0])
    (rows,) = [rows for title, rows in found.items() if title.startswith("CVAE prior frontier")]
    assert [row["test NLL"] for row in rows] == [f"{row['test_nll']:.2f}" for row in frontier["rows"]]
    assert_png(tmp_path / "report" / "cvae_prior_frontier.png")


def test_the_cvae_seen_heldout_split_agrees_with_the_runs_test(tmp_path):
    """experiments/cvae_seen_heldout.py on a debug=fast CVAE: its held-out conversions are the run's test pairs
    (the same BLEU and exact match as test/*), its N(0, I) draws with the model's seed and count give the run's
    test/gaussian_score_normal, and the hits split into training and held-out verbs add up to the score."""
    run = tmp_path / "run"
    result = python("-m", "vae_lab", "experiment=verb_tense", "debug=fast", "trainer.limit_test_batches=1.0",
                    "logger=none", "torch_threads=1", f"hydra.run.dir={run}", cwd=tmp_path)  # every test pair
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    result = python(str(ROOT / "experiments" / "cvae_seen_heldout.py"), str(run / "checkpoints" / "best.ckpt"),
                    "--verbs", "100000", "--draws", str(config["model"]["gaussian_samples"]),
                    "--seed", str(config["model"]["gaussian_seed"]), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads((run / "cvae_seen_heldout.json").read_text())
    assert found["heldout"]["bleu"] == pytest.approx(metrics["test/bleu"], abs=1e-6)
    assert found["heldout"]["exact_match"] == pytest.approx(metrics["test/exact_match"], abs=1e-6)
    draws = found["normal_draws"]
    assert draws["gaussian_score"] == pytest.approx(metrics["test/gaussian_score_normal"])
    assert draws["hits_train"] + draws["hits_heldout"] == round(draws["gaussian_score"] * draws["draws"])
    assert 0 <= draws["real_base_form_paradigm_wrong"] <= draws["real_base_form"] <= 1
    assert found["seen"]["pairs"] > 0 and 0 <= found["seen"]["bleu"] <= 1


def test_the_samplers_log_z_error_is_plotted_from_bench_rbm_json(tmp_path):
    curves = {"AIS (1024 chains)": [{"temperatures": 10, "seconds": 0.01, "rms_error": 0.5},
                                    {"temperatures": 100, "seconds": 0.1, "rms_error": 0.05}],
              "population annealing (1000 chains)": [{"temperatures": 10, "seconds": 0.02, "rms_error": 0.3}]}
    (tmp_path / "bench_rbm.json").write_text(json.dumps({"gibbs": [], "error_vs_time": {
        "rbm": "20+20", "exact_log_z": 31.0, "seeds": 2, "curves": curves}}))
    out = write_report([tmp_path], tmp_path / "report.md")
    (rows,) = [rows for title, rows in tables(out.read_text()).items() if title.startswith("RBM log Z error")]
    assert [(row["temperatures"], row["RMS error (nats)"]) for row in rows] == [("10", "0.5000"), ("100", "0.0500"),
                                                                                ("10", "0.3000")]
    assert_png(tmp_path / "log_z_error_vs_time.png")
    assert [path.name for path in tmp_path.glob("*.png")] == ["log_z_error_vs_time.png"]


def test_a_missing_or_empty_folder_is_one_line(tmp_path):
    for folder, message in ((tmp_path / "nowhere", "error: no folder"), (tmp_path, "error: no metrics.json")):
        result = python("-m", "vae_lab.report", str(folder), cwd=tmp_path)
        assert result.returncode == 1 and result.stderr.strip().startswith(message), result.stderr
        assert "Traceback" not in result.stderr


IMAGE_VAE = "vae_lab.models.image_vae.ImageVAE"


def test_each_run_folder_it_skips_is_one_stderr_line_with_why(tmp_path, capsys):
    """A run without metrics.json (stopped after a checkpoint, before one, still going, an evaluation mode
    that writes none) or with a broken one is one line each; the report goes on with the others."""
    fake_run(tmp_path / "done", ["k=1"], {"test/nll": 90.0}, IMAGE_VAE)
    fake_run(tmp_path / "stopped", ["k=5"], None, IMAGE_VAE, history=[{"step": 5, "train/loss": 1.0}])
    (tmp_path / "stopped" / "checkpoints").mkdir()
    (tmp_path / "stopped" / "checkpoints" / "last.ckpt").write_bytes(b"")
    fake_run(tmp_path / "early", ["k=2"], None, IMAGE_VAE, choices={"model": "dvaes_exp"})
    fake_run(tmp_path / "corrupt", ["k=3"], None, IMAGE_VAE)
    (tmp_path / "corrupt" / "metrics.json").write_text('{"test/nll": 9')
    fake_run(tmp_path / "listed", ["k=4"], None, IMAGE_VAE)
    (tmp_path / "listed" / "metrics.json").write_text("[1, 2]")
    fake_run(tmp_path / "sampled", ["mode=sample", "ckpt=x.ckpt"], None, IMAGE_VAE)
    fake_run(tmp_path / "live", ["k=6"], None, IMAGE_VAE)
    (tmp_path / "history_only").mkdir()
    (tmp_path / "history_only" / "history.jsonl").write_text('{"step": 1, "train/loss": 2.0}\n')
    (tmp_path / "notes").mkdir()  # no run: no line
    (tmp_path / "notes" / "todo.txt").write_text("nothing")
    lock = os.open(tmp_path / "live" / ".vae_lab.lock", os.O_RDWR | os.O_CREAT)
    os.write(lock, b"pid 123, since 2026-01-01 10:00:00")
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another open file: busy() sees a live holder
    try:
        main([str(tmp_path), "--out", str(tmp_path / "out" / "report.md")])
    finally:
        os.close(lock)
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"report: skipped {tmp_path / 'corrupt'}: metrics.json is not valid JSON (Expecting ',' delimiter: line 1 "
        "column 15 (char 14))",
        f"report: skipped {tmp_path / 'early'}: no metrics.json (the run stopped before its first checkpoint; run it "
        "again with python -m vae_lab hydra.mode=RUN k=2)",
        f"report: skipped {tmp_path / 'history_only'}: no metrics.json (the run stopped before its first checkpoint)",
        f"report: skipped {tmp_path / 'listed'}: metrics.json holds a JSON list, not an object of metrics",
        f"report: skipped {tmp_path / 'live'}: no metrics.json yet (the run is still going: pid 123, since "
        "2026-01-01 10:00:00)",
        f"report: skipped {tmp_path / 'sampled'}: no metrics.json (a mode=sample run writes its outputs, not metrics)",
        f"report: skipped {tmp_path / 'stopped'}: no metrics.json (the run did not finish; resume it with python -m "
        f"vae_lab mode=train run_dir={tmp_path / 'stopped'} ckpt=last)"]
    assert captured.out == f"wrote {tmp_path / 'out' / 'report.md'}\n"
    (rows,) = tables((tmp_path / "out" / "report.md").read_text()).values()
    assert rows == [{"test/nll": "90"}]


def test_an_unknown_key_stops_the_report_in_one_line_with_the_nearest_keys(tmp_path):
    fake_run(tmp_path / "a", ["k=1"], {"test/nll": 90.0, "test/elbo": -95.0}, IMAGE_VAE)
    fake_run(tmp_path / "b", ["k=5"], {"test/nll": 89.0, "val/nll": 91.0}, IMAGE_VAE)
    result = python("-m", "vae_lab.report", str(tmp_path), "--keys", "test/nll", "test/nonexistent", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == ["error: --keys test/nonexistent: no run has it; did you mean test/nll? "
                                          "(keys: test/elbo, test/nll, val/nll)"]
    assert not (tmp_path / "report.md").exists()
    out = write_report([tmp_path], tmp_path / "report.md", ["val/nll"])  # a key one run has is a column
    (rows,) = tables(out.read_text()).values()
    assert rows == [{"k": "1", "val/nll": "–"}, {"k": "5", "val/nll": "91"}]


def test_an_unknown_key_names_them_all_in_one_line(tmp_path, capsys):
    fake_run(tmp_path / "a", ["k=1"], {"test/nll": 90.0, "val/nll": 91.0}, IMAGE_VAE)
    with pytest.raises(SystemExit) as stopped:
        main([str(tmp_path), "--keys", "test/nl", "zzz"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == ("error: --keys test/nl zzz: no run has them; did you mean test/nll? "
                                       "(keys: test/nll, val/nll)\n")


def test_the_columns_are_the_group_choices_of_hydra_yaml_and_the_plain_key_overrides(tmp_path):
    """dataset=binarized_mnist comes from model=dvaes_exp's defaults (hydra.yaml), not the command line;
    Hydra's own groups (chosen or overridden) and the derived debug_model are no columns; a run without
    hydra.yaml falls back to its overrides."""
    def choices(model: str, launcher: str, **groups) -> dict:
        return {"debug": None, "experiment": None, "model": model, "recipe@_global_": "dvae_training",
                "dataset": "binarized_mnist", "prior": "rbm", "paths": "default", "hydra": "default",
                "debug_model": f"None_{model}", "hydra/launcher": launcher, "hydra/sweeper": "basic", **groups}

    fake_run(tmp_path / "0", ["model=dvaes_exp", "k=5", "paths.output_dir=/x"], {"test/nll": 91.6}, IMAGE_VAE,
             choices=choices("dvaes_exp", "basic"))
    fake_run(tmp_path / "1", ["model=dvaes_exp", "k=1", "dataset=omniglot", "hydra/launcher=joblib"],
             {"test/nll": 99.2}, IMAGE_VAE, choices=choices("dvaes_exp", "joblib", dataset="omniglot"))
    fake_run(tmp_path / "2", ["model=dvaepp_power", "k=1", "model.latent_dim=4"], {"test/nll": 93.1}, IMAGE_VAE,
             choices=choices("dvaepp_power", "basic", prior="normal"))
    fake_run(tmp_path / "3", ["model=dvaes_power", "k=1"], {"test/nll": 93.3}, IMAGE_VAE)  # no hydra.yaml
    out = write_report([tmp_path], tmp_path / "report.md")
    (rows,) = tables(out.read_text()).values()
    assert list(rows[0]) == ["model", "k", "dataset", "prior", "model.latent_dim", "test/nll"]
    assert [(row["model"], row["k"], row["dataset"], row["prior"], row["model.latent_dim"]) for row in rows] == [
        ("dvaepp_power", "1", "binarized_mnist", "normal", "4"), ("dvaes_exp", "1", "omniglot", "rbm", "–"),
        ("dvaes_exp", "5", "binarized_mnist", "rbm", "–"), ("dvaes_power", "1", "–", "–", "–")]

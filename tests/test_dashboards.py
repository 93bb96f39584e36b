"""Dashboards: an offline wandb run (read back from its .wandb file) carries the composed config, the
best value of the validation metrics as their summary, tables of samples, reconstructions,
interpolations and conversions, image grids for image families; sweep jobs are grouped by sweep and
named by the overrides their sweep varies."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 3


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "vae_lab", *args, "torch_threads=1"], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def wandb_records(path: Path):
    """The protobuf records of a ``run-*.wandb`` file: a 7-byte header (``:W&B``, magic, version), then
    LevelDB-log chunks (crc32, length, type: full / first / middle / last) in 32 KiB blocks."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, block, payload = 7, 32768, b""
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a chunk header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if position + 7 + length > len(data):  # a chunk still being written
            return
        payload += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            payload = b""
            yield record


def offline_run(run_dir: Path) -> dict:
    """An offline run of ``run_dir/wandb``: its run record, config, final summary, history rows and files folder."""
    (folder,) = (run_dir / "wandb").glob("offline-run-*")
    path = next(folder.glob("run-*.wandb"))
    for _ in range(120):  # wandb's service may still be flushing the file when wandb.finish() returns
        records = list(wandb_records(path))
        if records and records[-1].WhichOneof("record_type") == "exit":
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"{path}: no exit record after 60 s")
    run = {"config": {}, "summary": {}, "history": [], "files": folder / "files"}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run["run"] = record.run
        elif kind == "config":
            run["config"].update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "summary":
            for item in record.summary.update:
                run["summary"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "history":
            run["history"].append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                   for item in record.history.item})
    return run


def table(run: dict, key: str) -> dict:
    """The logged table ``key`` (its columns and rows), from the file the summary points at."""
    assert run["summary"][f"{key}/_type"] == "table-file"
    return json.loads((run["files"] / run["summary"][f"{key}/path"]).read_text())


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One debug=fast run of three epochs (three validations) with logger=wandb, offline."""
    tmp = tmp_path_factory.mktemp("dashboards")
    cli("debug=fast", "logger=wandb", f"trainer.max_epochs={EPOCHS}", f"hydra.run.dir={tmp / 'run'}", cwd=tmp)
    return tmp / "run"


def test_the_run_carries_the_composed_config(trained):
    config = yaml.safe_load((trained / ".hydra" / "config.yaml").read_text())
    run = offline_run(trained)
    assert run["config"]["model"]["latent_dim"] == config["model"]["latent_dim"]
    assert run["config"]["dataset"]["limit"] == 200 and run["config"]["annealing"] == config["annealing"]
    assert run["config"]["paths"]["output_dir"] == str(trained)  # resolved, not ${hydra:…}


def test_the_summary_keeps_the_best_validation_value(trained):
    run = offline_run(trained)
    validations = [row for row in run["history"] if "val/nll" in row]
    assert len(validations) == EPOCHS
    for key, best in (("val/nll", min), ("val/ppl", min), ("val/elbo", max), ("val/bleu", max)):
        assert run["summary"][key] == {best.__name__: best(row[key] for row in validations)}, key
    assert isinstance(run["summary"]["val/kl"], float)  # no summary defined: the last value
    # the run folder's own history (the report's learning curves) holds the same validations
    history = [json.loads(line) for line in (trained / "history.jsonl").read_text().splitlines()]
    assert [row["val/nll"] for row in history if "val/nll" in row] == [row["val/nll"] for row in validations]
    assert sum("train/loss" in row for row in history) == EPOCHS * 5  # debug=fast: 5 steps an epoch, each logged


def test_samples_and_reconstructions_are_tables(trained):
    run = offline_run(trained)
    samples = table(run, "test/samples")
    assert samples["columns"] == ["text"]
    assert [row[0] for row in samples["data"]] == (trained / "samples.txt").read_text().splitlines()
    reconstructions = table(run, "test/reconstructions")
    lines = (trained / "reconstructions.txt").read_text().splitlines()
    assert reconstructions["columns"] == lines[0].split("\t") == ["reference", "decoding"]
    assert reconstructions["data"] == [line.split("\t") for line in lines[1:]]


def test_interpolations_are_a_table(trained, tmp_path):
    cli("debug=fast", "logger=wandb", "mode=interpolate", f"run_dir={trained}", "sentence_a=the company said",
        "sentence_b=prices fell sharply", "steps=2", f"hydra.run.dir={tmp_path / 'interpolate'}", cwd=tmp_path)
    run = offline_run(tmp_path / "interpolate")
    assert run["run"].job_type == "interpolate" and run["config"]["mode"] == "interpolate"
    interpolation = table(run, "interpolation")
    lines = (tmp_path / "interpolate" / "interpolation.txt").read_text().splitlines()
    assert interpolation["columns"] == ["decoding"] and [row[0] for row in interpolation["data"]] == lines
    assert len(lines) == 4


def test_prior_samples_of_mode_sample_are_a_table(trained, tmp_path):
    cli("debug=fast", "logger=wandb", "mode=sample", f"run_dir={trained}", "num_samples=4",
        f"hydra.run.dir={tmp_path / 'sample'}", cwd=tmp_path)
    run = offline_run(tmp_path / "sample")
    assert run["run"].job_type == "sample"
    lines = (tmp_path / "sample" / "samples.txt").read_text().splitlines()
    assert len(lines) == 4 and [row[0] for row in table(run, "samples")["data"]] == lines


def test_conversions_are_a_table(tmp_path):
    import wandb
    from omegaconf import OmegaConf

    from tests.test_cvae import tiny_model
    from vae_lab.models.cvae_modes import convert

    words = tmp_path / "verbs.txt"
    words.write_text("abandon sp p\nwent p pg\n")
    wandb.init(mode="offline", dir=tmp_path, project="vae_lab")
    try:
        convert(OmegaConf.create({"word": None, "source": None, "target": None, "words_file": str(words)}),
                tiny_model(), tmp_path)
    finally:
        wandb.finish()
    conversions = table(offline_run(tmp_path), "conversions")
    lines = (tmp_path / "conversions.txt").read_text().splitlines()
    assert conversions["columns"] == ["word", "source", "target", "conversion"]
    assert conversions["data"] == [line.split("\t") for line in lines]
    assert [row[:3] for row in conversions["data"]] == [["abandon", "sp", "p"], ["went", "p", "pg"]]


def test_sweep_jobs_are_grouped_and_named_by_their_swept_overrides(tmp_path):
    """A joblib sweep (separate worker processes) over a text and an image family: one wandb group named
    after the sweep folder (the default, timestamped one), each run named by its value of the swept key;
    the image family's samples and reconstructions are images."""
    cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "debug=fast", "logger=wandb",
        "model=vae,dvaepp_exp", cwd=tmp_path)
    (sweep,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    names = {}
    for job in ("0", "1"):
        run = offline_run(sweep / job)
        assert run["run"].run_group == sweep.name
        names[run["run"].display_name] = run
        assert f"- {run['run'].display_name}" in (sweep / job / ".hydra" / "overrides.yaml").read_text()
    assert set(names) == {"model=vae", "model=dvaepp_exp"}
    image = names["model=dvaepp_exp"]
    for key in ("test/samples", "test/reconstructions"):
        assert image["summary"][f"{key}/_type"] == "image-file"
        assert (image["files"] / image["summary"][f"{key}/path"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert names["model=vae"]["summary"]["test/samples/_type"] == "table-file"

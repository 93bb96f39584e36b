"""experiments/cvae_training_frontier.py on two hand-made run folders: labels, the lab's corner, the columns
from cvae_seen_heldout.json, and the records it copies (never checkpoints)."""
import importlib.util
import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("cvae_training_frontier", ROOT / "experiments" / "cvae_training_frontier.py")
frontier = importlib.util.module_from_spec(spec)
spec.loader.exec_module(frontier)


def run_folder(root: Path, name: str, overrides: list[str], config: dict, bleu: float, score: float,
               draws: dict | None = None) -> Path:
    folder = root / name
    (folder / ".hydra").mkdir(parents=True)
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "best.ckpt").write_bytes(b"weights")
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    metrics = {key: 0.5 for key in frontier.COLUMNS}
    metrics.update({"test/bleu": bleu, "test/gaussian_score_normal": score, "test/active_units": 32.0})
    (folder / "metrics.json").write_text(json.dumps(metrics))
    if draws is not None:
        (folder / "cvae_seen_heldout.json").write_text(json.dumps({"normal_draws": draws}))
    return folder


def test_the_frontier_labels_scores_and_copies_records(tmp_path):
    base = run_folder(tmp_path / "runs", "base", ["experiment=verb_tense", "seed=1", "logger=csv", "torch_threads=1"],
                      {"penalties": {}}, bleu=0.91, score=0.03)
    gauss = run_folder(tmp_path / "runs", "gauss", ["experiment=verb_tense_gaussian", "seed=2"],
                       {"penalties": {"prior_decoding": {"assignment": "nearest_mean", "draws": 32, "start": 0}},
                        "dataset": {"paradigms": True}}, bleu=0.84, score=0.40,
                       draws={"draws": 2000, "gaussian_score": 0.31, "hits_train": 600, "hits_heldout": 20,
                              "distinct_hits": 290, "most_hit_counts": [31, 12, 9]})
    (gauss / "retest" / ".hydra").mkdir(parents=True)  # the best checkpoint tested again, on independent draws
    retest = {**json.loads((gauss / "metrics.json").read_text()), "test/gaussian_score_normal": 0.33}
    (gauss / "retest" / "metrics.json").write_text(json.dumps(retest))
    out = tmp_path / "out"
    frontier.main([str(base), str(gauss), "--out", str(out)])

    points = {p["run"]: p for p in json.loads((out / "frontier.json").read_text())}
    assert points["base"]["overrides"] == "seed=1"  # experiment=verb_tense and the run keys dropped
    assert points["gauss"]["overrides"] == ("experiment=verb_tense_gaussian seed=2 "
                                            "[prior_decoding: nearest_mean, 32 draws, paradigms, start 0]")
    assert points["gauss"]["draws/top_verb_share"] == 31 / 620 and "draws/score" not in points["base"]
    assert (points["gauss"]["tested"], points["gauss"]["test/gaussian_score_normal"]) == ("retest", 0.33)
    assert (points["base"]["tested"], points["base"]["test/gaussian_score_normal"]) == ("run", 0.03)
    rows = (out / "frontier.md").read_text().splitlines()[2:]
    assert rows[0].startswith("| gauss |") and rows[0].endswith("| retest | 0.310 (2000 draws) | 290 | 0.05 | missed |")
    assert rows[1].startswith("| base |") and rows[1].endswith("| run | — | — | — | missed |")
    assert (out / "frontier.png").stat().st_size > 0
    assert (out / "gauss" / "cvae_seen_heldout.json").is_file() and (out / "gauss" / ".hydra" / "config.yaml").is_file()
    assert json.loads((out / "gauss" / "retest" / "metrics.json").read_text()) == retest
    assert not (out / "gauss" / "checkpoints").exists() and not (out / "base" / "checkpoints").exists()

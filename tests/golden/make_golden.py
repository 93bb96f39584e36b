"""Write tests/golden/debug_fast.json: the metrics.json of the debug=fast run of every (model, dataset)
case of tests/test_every_model.py, with its overrides (``golden_overrides``), on the code checked out where
this runs. Kept from the code before a refactor, it holds the refactor to the same numbers:

    git worktree add /tmp/before <commit>; cp tests/golden/make_golden.py /tmp/before/tests/golden/
    cd /tmp/before && python tests/golden/make_golden.py <out.json> <model:dataset> …
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.conftest import compose_config  # noqa: E402
from vae_lab.train import run  # noqa: E402

FAST = ["debug=fast", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
        "eval.num_samples=2", "torch_threads=1"]


def golden_overrides(model: str, dataset: str) -> list[str]:
    return [f"model={model}", f"dataset={dataset}", *FAST]


def main() -> None:
    import torch

    torch.set_num_threads(1)
    golden = {}
    out, cases = Path(sys.argv[1]), sys.argv[2:]
    for case in cases:
        model, dataset = case.split(":")
        with tempfile.TemporaryDirectory() as folder:
            cfg = compose_config(golden_overrides(model, dataset), Path(folder) / "run")
            run(cfg)
            golden[case] = json.loads((Path(folder) / "run" / "metrics.json").read_text())
    out.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()

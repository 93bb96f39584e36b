"""Lightning callbacks that write a run's human-readable outputs."""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only

from vae_lab.data.files import write_atomic


class TestOutputsWriter(pl.Callback):
    """After testing: ``samples.txt`` (decoded prior samples) and ``reconstructions.txt``
    (reference and greedy decoding: a reconstruction, or a conversion for the CVAE; tab-separated)."""

    def __init__(self, output_dir: str, num_samples: int = 20, seed: int = 0):
        self.output_dir, self.num_samples, self.seed = Path(output_dir), num_samples, seed

    @rank_zero_only
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        model = pl_module.model
        if hasattr(model, "sample_prior") and self.num_samples > 0:
            generator = torch.Generator().manual_seed(self.seed)
            was_training = model.training
            model.eval()
            samples = model.sample_prior(self.num_samples, generator=generator)
            model.train(was_training)
            write_atomic(self.output_dir / "samples.txt", "\n".join(samples) + "\n")
        if "test" in pl_module.text_outputs:
            hyps, refs = pl_module.text_outputs["test"]
            lines = ["reference\tdecoding"] + [f"{r}\t{h}" for h, r in zip(hyps, refs)]
            write_atomic(self.output_dir / "reconstructions.txt", "\n".join(lines) + "\n")

"""Lightning callbacks that write a run's human-readable outputs."""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only

from vae_lab.outputs import TextOutput


class TestOutputsWriter(pl.Callback):
    """After testing, what the family shows, by kind: ``samples.txt`` or ``samples.png`` (decoded prior
    samples) and ``reconstructions.txt`` (reference and greedy decoding, tab-separated: a
    reconstruction, or a conversion for the CVAE) or ``reconstructions.png`` (test images over their
    reconstructions); each also logged to wandb (a table or an image) when it is a logger."""

    def __init__(self, output_dir: str, num_samples: int = 20, seed: int = 0):
        self.output_dir, self.num_samples, self.seed = Path(output_dir), num_samples, seed

    @rank_zero_only
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        model = pl_module.model
        was_training = model.training
        model.eval()
        outputs = {}
        with torch.no_grad():
            if self.num_samples > 0:
                outputs["samples"] = model.sample_outputs(self.num_samples, torch.Generator().manual_seed(self.seed))
            if "test" in pl_module.text_outputs:
                hyps, refs = pl_module.text_outputs["test"]
                outputs["reconstructions"] = TextOutput([f"{r}\t{h}" for h, r in zip(hyps, refs)],
                                                        header="reference\tdecoding")
            else:
                batch = next(iter(trainer.datamodule.test_dataloader()))
                batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
                outputs["reconstructions"] = model.reconstruction_outputs(batch)
        model.train(was_training)
        import wandb

        for name, output in outputs.items():
            if output is None:
                continue
            output.write(self.output_dir, name)
            if wandb.run is not None:  # logger=wandb
                wandb.run.log({f"test/{name}": output.wandb_value()})

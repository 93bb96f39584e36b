"""Lightning callbacks that write a run's human-readable outputs, its metric history and its checkpoints:
checkpoints that refer to each other relative to their folder (``RunCheckpoint``), written whole or not at
all (``AtomicCheckpointIO``), and one on Ctrl-C / SIGTERM (``InterruptCheckpoint``)."""
from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.utilities import rank_zero_only

from vae_lab.data.files import write_atomic
from vae_lab.devices import generator_on
from vae_lab.errors import WriteError
from vae_lab.outputs import TextOutput, publish

PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose saved state names its files relative to its folder, so a run folder that
    is copied or moved resumes, and tests, its own ``best.ckpt``. A state written with absolute paths (by
    ``ModelCheckpoint``, before) is moved the same way from the folder it names. Its ``state_key`` is
    ModelCheckpoint's, so either reads the other's."""

    @property
    def state_key(self) -> str:
        return "ModelCheckpoint" + super().state_key[len(type(self).__qualname__):]

    def _relative(self, path: str) -> str:
        if not path or self.dirpath is None or not os.path.isabs(path):
            return path
        return os.path.relpath(path, self.dirpath)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update({key: self._relative(state[key]) for key in PATH_KEYS if state.get(key)})
        state["best_k_models"] = {self._relative(path): score for path, score in state["best_k_models"].items()}
        state["relative_paths"] = True
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        old = state.get("dirpath")
        if self.dirpath is not None:
            def here(path: str) -> str:
                if not path:
                    return path
                if not os.path.isabs(path):
                    return os.path.join(self.dirpath, path)
                return os.path.join(self.dirpath, os.path.relpath(path, old)) if old else path

            state.update({key: here(state[key]) for key in PATH_KEYS if state.get(key)})
            state["best_k_models"] = {here(path): score for path, score in state.get("best_k_models", {}).items()}
            state["dirpath"] = self.dirpath
        state.pop("relative_paths", None)
        super().load_state_dict(state)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written through a temporary sibling and a rename (vae_lab.data.files.write_atomic): a kill
    or a full disk during the write leaves the previous file whole; a failed write ends in one line."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        try:
            write_atomic(Path(path), buffer.getvalue())
        except OSError as error:
            raise WriteError(f"{path}: the checkpoint could not be written ({error.strerror or error}); the "
                             "previous one is intact: free space (or fix the folder) and resume with mode=train "
                             f"run_dir={Path(path).parent.parent} ckpt=last") from None


class InterruptCheckpoint(pl.Callback):
    """Ctrl-C or SIGTERM while training: ``last.ckpt`` of the step reached (atomically, through the trainer's
    checkpoint IO), then ``interrupted`` holds (exit code, step, path): 130 for Ctrl-C, 143 for SIGTERM, as
    a shell reports them; the mode turns it into one line with the resume command."""

    def __init__(self, dirpath: str):
        self.dirpath, self.interrupted = Path(dirpath), None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        from pytorch_lightning.trainer.states import TrainerFn
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        code = 130 if isinstance(exception, KeyboardInterrupt) else 143 if isinstance(exception, SIGTERMException) else 0
        if not code or trainer.state.fn != TrainerFn.FITTING:
            return
        path = self.dirpath / "last.ckpt"
        trainer.save_checkpoint(path, weights_only=False)
        self.interrupted = (code, trainer.global_step, path)


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
                outputs["samples"] = model.sample_outputs(self.num_samples, generator_on(pl_module.device, self.seed))
            if "test" in pl_module.text_outputs:
                hyps, refs = pl_module.text_outputs["test"]
                outputs["reconstructions"] = TextOutput([f"{r}\t{h}" for h, r in zip(hyps, refs)],
                                                        columns=("reference", "decoding"), header=True)
            else:
                batch = next(iter(trainer.datamodule.test_dataloader()))
                batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
                outputs["reconstructions"] = model.reconstruction_outputs(batch)
        model.train(was_training)
        for name, output in outputs.items():
            if output is not None:
                publish(output, self.output_dir, name, key=f"test/{name}")


class MetricHistoryWriter(pl.Callback):
    """Every logged ``train/…`` value (each ``trainer.log_every_n_steps`` steps) and every validation's
    ``val/…`` values, appended to ``history.jsonl`` in the run folder as one JSON object a line
    (``{"step", "epoch", "<stage>/<name>": value, …}``), whatever the logger; rank 0 writes.
    Rows reach the file at each validation and epoch end, with the checkpoints: a run stopped before
    (a NaN loss) leaves none, and a run resumed from ``last.ckpt`` goes on from its last row.
    ``python -m vae_lab.report`` draws the learning curves from it."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.rows: list[dict] = []

    def _add(self, trainer: pl.Trainer, stage: str) -> None:
        values = {key: float(value) for key, value in trainer.callback_metrics.items()
                  if key.startswith(f"{stage}/") and torch.as_tensor(value).numel() == 1}
        values = {key: value for key, value in sorted(values.items()) if math.isfinite(value)}
        if values:
            self.rows.append({"step": trainer.global_step, "epoch": trainer.current_epoch, **values})

    def _flush(self) -> None:
        if self.rows:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as file:
                file.writelines(json.dumps(row) + "\n" for row in self.rows)
            self.rows = []

    @rank_zero_only
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if trainer.global_step % max(trainer.log_every_n_steps, 1) == 0:
            self._add(trainer, "train")

    @rank_zero_only
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._add(trainer, "val")
            self._flush()

    @rank_zero_only
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush()

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush()


class StepCheckpoints(pl.Callback):
    """A checkpoint at each of the chosen optimizer steps (``checkpoints/step12000.ckpt``, …), kept beside
    the best and the last: the points of a learning curve that ``mode=test ckpt=<file>`` evaluates
    later (the discrete-VAE recipe keeps 12k, 25k, 50k and 100k). Steps past ``trainer.max_steps``
    are never reached and write nothing."""

    def __init__(self, dirpath: str, steps: list[int]):
        if any(int(step) <= 0 for step in steps):
            raise ValueError(f"callbacks.step_checkpoints.steps={list(steps)}: steps count from 1")
        self.dirpath, self.steps = Path(dirpath), sorted({int(step) for step in steps})

    def path(self, step: int) -> Path:
        return self.dirpath / f"step{step}.ckpt"

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step in self.steps and not self.path(step).exists():  # a resumed run does not write it twice
            trainer.save_checkpoint(self.path(step))

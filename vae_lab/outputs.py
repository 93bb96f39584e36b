"""What a family shows a person, by kind: lines of text, or a grid of images.

A family's ``sample_outputs`` / ``reconstruction_outputs`` (and its modes: interpolations,
conversions) return one of these; ``publish`` writes it (``samples.txt`` or ``samples.png``) and logs
it to wandb (a table or an image), never caring which kind it holds.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vae_lab.data.files import write_atomic


@dataclass
class TextOutput:
    """Lines of text (decoded sentences, conversions), each of ``columns`` tab-separated fields (the
    columns of its wandb table); ``header``: the file starts with a line of the column names."""

    lines: list[str]
    columns: tuple[str, ...] = ("text",)
    header: bool = False

    suffix = ".txt"

    def write(self, folder: Path, name: str) -> Path:
        path = Path(folder) / f"{name}{self.suffix}"
        rows = (["\t".join(self.columns)] if self.header else []) + self.lines
        write_atomic(path, "\n".join(rows) + "\n")
        return path

    def rows(self) -> list[list[str]]:
        """Each line's fields, one per column (a last field keeps any further tabs; missing ones are '')."""
        width = len(self.columns)
        return [(line.split("\t", width - 1) + [""] * width)[:width] for line in self.lines]

    def show(self) -> None:
        for line in self.lines:
            print(line)

    def wandb_value(self):
        import wandb

        return wandb.Table(columns=list(self.columns), data=self.rows())


@dataclass
class ImageOutput:
    """Images ``[n, height, width]`` with values in [0, 1] (pixel probabilities or binary pixels), shown
    as one grid of ``columns`` images a row."""

    images: torch.Tensor
    columns: int = 10

    suffix = ".png"

    def grid(self) -> np.ndarray:
        """One ``[rows * (h + 1) + 1, columns * (w + 1) + 1]`` array, images separated by 1-pixel lines."""
        images = self.images.detach().float().clamp(0, 1).cpu().numpy()
        n, h, w = images.shape
        columns = min(self.columns, n)
        rows = math.ceil(n / columns)
        grid = np.full((rows * (h + 1) + 1, columns * (w + 1) + 1), 0.5, dtype=np.float32)
        for i, image in enumerate(images):
            r, c = divmod(i, columns)
            grid[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + c * (w + 1): 1 + c * (w + 1) + w] = image
        return grid

    def write(self, folder: Path, name: str) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        path = Path(folder) / f"{name}{self.suffix}"
        buffer = io.BytesIO()
        plt.imsave(buffer, self.grid(), cmap="gray", vmin=0.0, vmax=1.0, format="png")
        write_atomic(path, buffer.getvalue())
        return path

    def show(self) -> None:
        print(f"{len(self.images)} images")

    def wandb_value(self):
        import wandb

        return wandb.Image(self.grid())


def publish(output: TextOutput | ImageOutput, folder: Path, name: str, key: str | None = None) -> Path:
    """Write ``output`` to ``folder/<name>.txt`` (or ``.png``) and, when a wandb run is active
    (``logger=wandb``), log it under ``key`` (default: ``name``) as a table or an image."""
    path = output.write(folder, name)
    import wandb

    if wandb.run is not None:
        wandb.run.log({key or name: output.wandb_value()})
    return path

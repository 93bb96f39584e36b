"""What every LightningDataModule of the project shares: the split loaders and DDP sharding."""
from __future__ import annotations

from typing import Callable, Sequence

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Subset


def distributed_rank() -> tuple[int, int]:
    """(world size, rank) when a process group is up, else (1, 0)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def evaluation_loader(dataset: Dataset, batch_size: int, collate_fn: Callable, num_workers: int,
                      order: Sequence[int] | None = None) -> DataLoader:
    """In order (``order``: these indices, e.g. sorted by length so a batch holds little padding), no
    shuffling; under DDP rank r of R evaluates items r, r + R, r + 2R, …: every item exactly once, the
    shards differing by at most one item (the epoch's sums add the ranks' shares, so nothing is padded
    or repeated)."""
    replicas, rank = distributed_rank()
    if order is not None or replicas > 1:
        indices = list(range(len(dataset))) if order is None else list(order)
        dataset = Subset(dataset, indices[rank::replicas])
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn,
                      num_workers=num_workers)


class SplitDataModule(pl.LightningDataModule):
    """train / valid / test loaders from one ``_loader(split, train)`` of the subclass."""

    def _loader(self, split: str, train: bool) -> DataLoader:  # pragma: no cover
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

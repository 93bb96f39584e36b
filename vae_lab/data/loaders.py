"""The one data contract: every LightningDataModule of the project is a ``SplitDataModule``.

A datamodule declares the batch kind it yields (``batch_kind``; a family declares the kind it reads,
``LatentVariableModel.reads``, and the config check pairs them), builds its train / valid / test
loaders from one ``_loader(split, train)`` (training shuffled and sharded across DDP ranks, evaluation
through ``evaluation_loader``: every item exactly once over the ranks), gives a family what it needs to
know of the data (``model_kwargs``) and hands out training items by index as its loaders batch them
(``training_batch``), so a family never reads a dataset's internals.
"""
from __future__ import annotations

from typing import Callable, ClassVar, Iterator, Sequence

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

#: what each batch kind holds (dicts of tensors)
BATCH_KINDS = {
    "sentences": "tokens [batch, time] (word ids, padded), lengths [batch]",
    "verb_forms": "tokens [batch, time] (characters + <eos>), lengths [batch], tense [batch]; conversion "
                  "pairs add target_tokens, target_lengths, target_tense",
    "images": "pixels [batch, pixels] of 0/1",
}


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


class ShuffledShards(Sampler[int]):
    """A seeded random order of ``num_items`` per epoch (a pure function of ``seed`` and the epoch), and
    under DDP each of ``num_replicas`` ranks takes every num_replicas-th index of it, cut to the same
    length on every rank. ``set_epoch`` (called by Lightning at each epoch start, so a resumed run gets
    the uninterrupted run's order) fixes the epoch; when nobody calls it, each pass moves on to the next."""

    def __init__(self, num_items: int, seed: int, num_replicas: int = 1, rank: int = 0):
        self.num_items, self.seed, self.epoch = num_items, int(seed), 0
        self.num_replicas, self.rank = num_replicas, rank

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        self.epoch += 1
        order = torch.randperm(self.num_items, generator=generator).tolist()
        return iter(order[self.rank::self.num_replicas][: len(self)])

    def __len__(self) -> int:
        return self.num_items // self.num_replicas if self.num_replicas > 1 else self.num_items


class SplitDataModule(pl.LightningDataModule):
    """train / valid / test loaders from one ``_loader(split, train)`` of the subclass, which also
    declares ``batch_kind`` (a key of ``BATCH_KINDS``) and gives ``training_batch``,
    ``num_training_items`` and ``model_kwargs`` (call them after ``setup``)."""

    batch_kind: ClassVar[str] = ""

    def _loader(self, split: str, train: bool) -> DataLoader:  # pragma: no cover
        raise NotImplementedError

    def training_batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:  # pragma: no cover
        """The training items ``indices`` as one batch of this module's kind, as its loaders collate them
        (without training-time randomness: the items themselves)."""
        raise NotImplementedError

    def num_training_items(self) -> int:  # pragma: no cover
        raise NotImplementedError

    def model_kwargs(self) -> dict:
        """What a family is built with from the data (a vocabulary, the image size); none by default."""
        return {}

    def data_metrics(self) -> dict[str, float]:
        """What the data did to the run, for metrics.json under ``data/`` (e.g. ``data/truncated_examples``)."""
        return {}

    def check_batch(self, train_items: int, batch_size: int, what: str) -> None:
        """A training split with fewer items than one batch stops with one line (training would see a
        fraction of a batch, or nothing)."""
        if train_items < batch_size:
            from vae_lab.errors import ConfigError

            raise ConfigError(f"dataset: the train split has {train_items} {what}, fewer than one batch "
                              f"(dataset.batch_size={batch_size}); give more data or a smaller dataset.batch_size")

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

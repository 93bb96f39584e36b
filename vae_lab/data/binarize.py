"""Counter-based Bernoulli draws of binary images: a pixel's draw is a pure function of (seed, split or
epoch, image index, pixel) through SplitMix64 of a key and the pixel's position, so it does not depend
on the numpy version, the batch order, the number of workers or DDP ranks."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "valid", "test")

_MASK64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
STREAMS = {"train": 1, "valid": 2, "test": 3, "epoch": 4, "order": 5}


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function (uint64 arrays; wraps modulo 2**64)."""
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def stream_key(*words: int) -> np.uint64:
    """A 64-bit key for a stream named by integers, e.g. ``(seed, STREAMS["valid"])``."""
    state = np.zeros(1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for word in words:
            state = _splitmix64(state ^ np.uint64(int(word) & _MASK64))
    return state[0]


@dataclass
class ImageSplits:
    """What an image reader gives: each split's images as rows ``[N, H·W]`` (uint8 0/1: already binary;
    float: grey values in [0, 1]) and the images' ``shape`` (H, W)."""

    images: dict[str, np.ndarray]
    shape: tuple[int, int]

    def __post_init__(self):
        pixels = self.shape[0] * self.shape[1]
        for split, array in self.images.items():
            if array.ndim != 2 or array.shape[1] != pixels:
                raise ValueError(f"{split}: images of shape {array.shape}, expected [N, {pixels}] for {self.shape}")


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


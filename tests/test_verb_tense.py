"""Verb-tense data, metrics and the CVAE: fast checks that need neither the module nor train.py."""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from sacrebleu.metrics import BLEU

from vae_lab.data.verb_tense import (
    LAB_TEST_TENSES, TENSES, CharTokenizer, VerbTenseDataModule, parse_tense_pairs, read_lemminflect,
    split_verbs,
)
from vae_lab.errors import ConfigError
from vae_lab.metrics.tense import char_bleu, exact_match, gaussian_score, mean_char_bleu

LAB_TRAIN = """abandon abandons abandoning abandoned
abet abets abetting abetted
begin begins beginning began
"""
LAB_TEST = """abandon abandoned
abet abetting
begin begins
expend expends
sent sends
split splitting
flared flare
functioning function
functioning functioned
healing heals
"""


@pytest.fixture(scope="module")
def lexicon():
    return read_lemminflect()


@pytest.fixture
def lab_dir(tmp_path: Path) -> Path:
    (tmp_path / "train.txt").write_text(LAB_TRAIN)
    (tmp_path / "test.txt").write_text(LAB_TEST)
    return tmp_path


# ---------------------------------------------------------------- data


def test_lexicon_reads_four_forms(lexicon):
    assert 6400 <= len(lexicon) <= 6500
    verbs = {verb[0]: verb for verb in lexicon}
    assert verbs["abandon"] == ("abandon", "abandons", "abandoning", "abandoned")
    assert verbs["go"] == ("go", "goes", "going", "went")
    assert verbs["babysit"][3] == "babysat"  # first variant in a-z ("baby-sat/babysat")
    assert all(form.isalpha() and form.islower() and form.isascii() for verb in lexicon for form in verb)


def test_split_is_deterministic_and_has_no_leakage(lexicon):
    train, val, test = split_verbs(lexicon, (0.8, 0.1, 0.1), seed=0)
    assert (train, val, test) == split_verbs(lexicon, (0.8, 0.1, 0.1), seed=0)
    assert split_verbs(lexicon, (0.8, 0.1, 0.1), seed=1)[2] != test
    assert sorted(train + val + test) == sorted(lexicon)
    assert abs(len(train) - 0.8 * len(lexicon)) < 10 and abs(len(test) - 0.1 * len(lexicon)) < 10
    forms = [{form for verb in part for form in verb} for part in (train, val, test)]
    assert not forms[0] & forms[1] and not forms[0] & forms[2] and not forms[1] & forms[2]


def test_datamodule_batches_and_pairs():
    datamodule = VerbTenseDataModule(data_dir="unused", batch_size=16, eval_batch_size=32,
                                     eval_pairs=[["sp", "p"], "p->sp"])
    datamodule.prepare_data()
    datamodule.setup("fit")
    assert len(datamodule.val_pairs) == 2 * len(datamodule.val_verbs)
    test_words = {form for verb in datamodule.test_verbs for form in verb}
    assert not test_words & {form for verb in datamodule.train_verbs for form in verb}
    batch = next(iter(datamodule.train_dataloader()))
    assert set(batch) == {"tokens", "lengths", "tense"}
    assert batch["tokens"].shape == (16, int(batch["lengths"].max()))
    batch = next(iter(datamodule.val_dataloader()))
    assert set(batch) == {"tokens", "lengths", "tense", "target_tokens", "target_lengths", "target_tense"}
    assert batch["tense"].tolist()[:2] == [0, 3] and batch["target_tense"].tolist()[:2] == [3, 0]
    kwargs = datamodule.model_kwargs()
    assert kwargs["tokenizer"].vocab_size == 29 and kwargs["tenses"] == ("sp", "tp", "pg", "p")
    assert kwargs["lexicon"] == datamodule.lexicon


def test_conversion_training_pairs_and_limit():
    datamodule = VerbTenseDataModule(batch_size=200, train_pairs="all", limit=50)
    datamodule.setup("fit")
    assert len(datamodule.train_verbs) == len(datamodule.test_verbs) == 50 and len(datamodule.lexicon) > 6000
    torch.manual_seed(0)
    batch = next(iter(datamodule.train_dataloader()))
    assert len(batch["tokens"]) == 200  # an epoch keeps one item per (form, tense)
    tokenizer = CharTokenizer()
    sources = [tokenizer.decode(row) for row in batch["tokens"].tolist()]
    targets = [tokenizer.decode(row) for row in batch["target_tokens"].tolist()]
    for source, tense, target, target_tense in zip(sources, batch["tense"].tolist(), targets,
                                                   batch["target_tense"].tolist()):
        # the target is a form of the source's verb
        assert any(verb[tense] == source and verb[target_tense] == target for verb in datamodule.train_verbs)
    assert len(set(batch["target_tense"].tolist())) == 4 and (batch["tense"] != batch["target_tense"]).any()
    with pytest.raises(ConfigError, match="train_pairs"):
        VerbTenseDataModule(train_pairs="cross")


def test_tokenizer_round_trips(lexicon):
    tokenizer = CharTokenizer()
    assert tokenizer.vocab_size == 29
    words = [form for verb in lexicon[:200] for form in verb]
    ids, lengths = tokenizer.pad(words)
    assert [tokenizer.decode(row) for row in ids.tolist()] == words
    assert lengths.tolist() == [len(w) + 1 for w in words]
    assert tokenizer.encode("go") == [tokenizer.stoi["g"], tokenizer.stoi["o"], CharTokenizer.EOS]
    with pytest.raises(ValueError, match="a-z"):
        tokenizer.encode("Go")


def test_lab_files(lab_dir):
    datamodule = VerbTenseDataModule(data_dir="unused", path=str(lab_dir), batch_size=4)
    datamodule.prepare_data()
    datamodule.setup("fit")
    assert datamodule.lexicon[2] == ("begin", "begins", "beginning", "began")
    index = {t: i for i, t in enumerate(TENSES)}
    assert datamodule.test_pairs[0] == ("abandon", index["sp"], "abandoned", index["p"])
    assert datamodule.test_pairs[7] == ("functioning", index["pg"], "function", index["sp"])
    assert [(TENSES[s], TENSES[t]) for _, s, _, t in datamodule.test_pairs] == list(LAB_TEST_TENSES)


def test_missing_lab_file_names_the_key(tmp_path):
    datamodule = VerbTenseDataModule(data_dir="unused", path=str(tmp_path))
    with pytest.raises(ConfigError, match=r"^dataset.path: no file train.txt in .*dataset.path=null"):
        datamodule.prepare_data()


def test_eval_pairs_parsing():
    assert len(parse_tense_pairs("all")) == 12
    assert parse_tense_pairs([["sp", "p"], "pg->tp", [0, 1]]) == [(0, 3), (2, 1), (0, 1)]
    with pytest.raises(ValueError, match="^dataset.eval_pairs: unknown tense 'past'; allowed: sp, tp, pg, p$"):
        parse_tense_pairs([["sp", "past"]])


# ---------------------------------------------------------------- metrics


def nltk_method1_bleu(hypothesis: str, reference: str) -> float:
    """NLTK's sentence_bleu, weights (0.25,)*4, SmoothingFunction().method1 (epsilon 0.1), on characters."""
    precisions = []
    for n in range(1, 5):
        hyp = Counter(hypothesis[i: i + n] for i in range(len(hypothesis) - n + 1))
        ref = Counter(reference[i: i + n] for i in range(len(reference) - n + 1))
        matches = sum(min(count, ref[gram]) for gram, count in hyp.items())
        precisions.append((matches, max(1, sum(hyp.values()))))  # NLTK keeps the fraction unreduced
    if precisions[0][0] == 0:
        return 0.0
    smoothed = [(matches or 0.1) / total for matches, total in precisions]
    penalty = 1.0 if len(hypothesis) > len(reference) else math.exp(1 - len(reference) / len(hypothesis))
    return penalty * math.exp(sum(0.25 * math.log(p) for p in smoothed))


def test_bleu_equals_sacrebleu_and_nltk_method1():
    pairs = [("abandoned", "abandoned"), ("abandond", "abandoned"), ("abandonned", "abandoned"),
             ("wented", "went"), ("goes", "going"), ("xyzw", "abcd"), ("splitting", "spliting")]
    direct = BLEU(tokenize="char", smooth_method="floor", smooth_value=0.1, effective_order=True)
    for hyp, ref in pairs:
        assert char_bleu(hyp, ref) == pytest.approx(min(direct.sentence_score(hyp, [ref]).score / 100, 1.0))
        assert char_bleu(hyp, ref) == pytest.approx(nltk_method1_bleu(hyp, ref), abs=1e-9)  # >= 4 chars
    assert char_bleu("abandoned", "abandoned") == 1.0
    assert char_bleu("go", "go") == 1.0  # effective order; NLTK method1 gives 0.316
    hyps, refs = [p[0] for p in pairs], [p[1] for p in pairs]
    assert mean_char_bleu(hyps, refs) == pytest.approx(sum(char_bleu(h, r) for h, r in pairs) / len(pairs))
    assert mean_char_bleu(refs, refs) == 1.0


def test_exact_match():
    assert exact_match(["went", "goes", "go"], ["went", "goes", "going"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        exact_match(["a"], [])


def test_gaussian_score_counts_whole_verbs():
    lexicon = [("go", "goes", "going", "went"), ("walk", "walks", "walking", "walked")]
    decodings = [("go", "goes", "going", "went"), ("walk", "walks", "walking", "walked"),
                 ("walk", "walks", "walking", "walkd"), ("go", "goes", "going", "went"),
                 ("goes", "go", "going", "went")]
    assert gaussian_score(decodings, lexicon) == pytest.approx(3 / 5)
    assert gaussian_score([], lexicon) != gaussian_score([], lexicon)  # nan

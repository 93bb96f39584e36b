"""Metrics of tense conversion: character BLEU-4 per pair, exact match, and the Gaussian score.

BLEU follows the classic lab: sentence BLEU-4 over the characters of each (hypothesis, reference)
word, averaged over the pairs. The lab used NLTK ``sentence_bleu(weights=(0.25,)*4,
smoothing_function=SmoothingFunction().method1)``; method 1 of Chen & Cherry (2014) adds
epsilon = 0.1 to the numerator of an n-gram precision that has no match, which is sacrebleu's
``smooth_method="floor", smooth_value=0.1``. The two agree on every hypothesis of >= 4 characters.
They differ on shorter ones: NLTK still counts the empty 3-/4-gram orders (as 0.1 / 1), so an exact
2-letter match (``go`` -> ``go``) scores 0.32 there, while sacrebleu's ``effective_order=True`` drops
the orders the hypothesis has no n-grams of, and scores it 1.0.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from sacrebleu.metrics import BLEU

_BLEU_CACHE: dict[tuple[str, float], BLEU] = {}


def _bleu(smooth_method: str, smooth_value: float) -> BLEU:
    key = (smooth_method, smooth_value)
    if key not in _BLEU_CACHE:
        _BLEU_CACHE[key] = BLEU(tokenize="char", smooth_method=smooth_method, smooth_value=smooth_value,
                                effective_order=True)
    return _BLEU_CACHE[key]


def char_bleu(hypothesis: str, reference: str, smooth_method: str = "floor", smooth_value: float = 0.1) -> float:
    """Sentence BLEU-4 in [0, 1] over the characters of one word (sacrebleu, 'floor' = NLTK method 1)."""
    score = _bleu(smooth_method, smooth_value).sentence_score(hypothesis, [reference]).score / 100.0
    return min(score, 1.0)  # sacrebleu's 100 * exp(log 1) can round to 100.00000000000004


def mean_char_bleu(hypotheses: Sequence[str], references: Sequence[str], smooth_method: str = "floor",
                   smooth_value: float = 0.1) -> float:
    """The mean of ``char_bleu`` over the pairs, as the lab averages its test pairs; summed exactly
    (``math.fsum``), so it is the same whatever the pairs' order (DDP gathers them rank by rank)."""
    _check_lengths(hypotheses, references)
    if not hypotheses:
        return float("nan")
    return math.fsum(char_bleu(h, r, smooth_method, smooth_value) for h, r in zip(hypotheses, references)) / len(hypotheses)


def exact_match(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Share of hypotheses equal to their reference."""
    _check_lengths(hypotheses, references)
    if not hypotheses:
        return float("nan")
    return sum(h == r for h, r in zip(hypotheses, references)) / len(hypotheses)


def gaussian_score(decodings: Sequence[Sequence[str]], lexicon: Iterable[Sequence[str]]) -> float:
    """Share of prior samples whose decodings under the four tenses (sp, tp, pg, p) are exactly the
    four forms of one verb of the lexicon (the lab's definition, where the lexicon is its train.txt)."""
    if not decodings:
        return float("nan")
    verbs = {tuple(verb) for verb in lexicon}
    return sum(tuple(forms) in verbs for forms in decodings) / len(decodings)


def _check_lengths(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")

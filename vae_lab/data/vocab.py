"""Word vocabulary with the special tokens every text family shares."""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

PAD, SOS, EOS, UNK = "<pad>", "<sos>", "<eos>", "<unk>"


class Vocabulary:
    """Token <-> id map; ids 0..3 are <pad>, <sos>, <eos>, <unk>."""

    def __init__(self, tokens: Iterable[str]):
        self.itos: list[str] = [PAD, SOS, EOS, UNK]
        self.itos += [t for t in tokens if t not in (PAD, SOS, EOS, UNK)]
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        self.pad, self.sos, self.eos, self.unk = 0, 1, 2, 3

    @classmethod
    def from_sentences(cls, sentences: Iterable[Sequence[str]], max_size: int | None = None,
                       min_freq: int = 1) -> "Vocabulary":
        """Most frequent first (ties by first appearance): at most ``max_size`` corpus words (one of
        which may be the corpus's own <unk>) after the special tokens."""
        counts = Counter(token for sentence in sentences for token in sentence)
        tokens = [t for t, c in counts.most_common() if c >= min_freq]
        if max_size is not None:
            tokens = tokens[:max_size]
        return cls(tokens)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, sentence: Sequence[str]) -> list[int]:
        return [self.stoi.get(token, self.unk) for token in sentence]

    def decode(self, ids: Iterable[int], stop_at_eos: bool = True) -> list[str]:
        """Tokens up to (not including) the first <eos>; <pad> and <sos> dropped."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.eos and stop_at_eos:
                break
            if i in (self.pad, self.sos):
                continue
            words.append(self.itos[i])
        return words

    def state_dict(self) -> dict:
        return {"itos": list(self.itos)}

    @classmethod
    def from_state_dict(cls, state: dict) -> "Vocabulary":
        return cls(state["itos"])

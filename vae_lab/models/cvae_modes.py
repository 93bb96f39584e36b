"""``mode=convert``: convert verbs between tenses with a trained TenseCVAE.

One word: ``mode=convert word=abandon source=sp target=p`` prints ``abandon (sp) -> abandoned (p)``.
A file: ``mode=convert words_file=verbs.txt source=sp target=p``; each line is ``word`` (converted
``source`` -> ``target``) or ``word source target``; ``# …`` and blank lines are skipped. The
conversions are printed and written to ``conversions.txt`` in the run folder, one
``word<TAB>source<TAB>target<TAB>conversion`` a line (and logged as a table with ``logger=wandb``).
"""
from __future__ import annotations

import pathlib

from vae_lab.errors import ConfigError
from vae_lab.outputs import TextOutput, publish


def _setting(cfg, key: str):
    return cfg.get(key) if hasattr(cfg, "get") else getattr(cfg, key, None)


def read_words_file(file: pathlib.Path, source, target, model) -> list[tuple[str, int, int]]:
    """Lines ``word`` or ``word source target`` -> (word, source index, target index), validated."""
    if not file.is_file():
        raise ConfigError(f"words_file: no file {file}; pass words_file=<a file with one word a line>")
    requests = []
    for number, line in enumerate(file.read_text().splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) == 1:
            if source is None or target is None:
                raise ConfigError(f"words_file: line {number} has no tenses; write 'word source target' "
                                 "or pass source=… target=…")
            fields += [source, target]
        if len(fields) != 3:
            raise ConfigError(f"words_file: line {number} must be 'word' or 'word source target', got {line!r}")
        word, line_source, line_target = fields
        requests.append((model.tokenizer.check(word, f"words_file (line {number})"),
                         model.tense_index(line_source, f"words_file (line {number}) source"),
                         model.tense_index(line_target, f"words_file (line {number}) target")))
    return requests


def convert(cfg, model, run_dir: pathlib.Path) -> dict:
    """Convert ``cfg.word`` (or every line of ``cfg.words_file``) from ``cfg.source`` to ``cfg.target``.

    Returns ``{"conversions": n}``.
    """
    word, words_file = _setting(cfg, "word"), _setting(cfg, "words_file")
    source, target = _setting(cfg, "source"), _setting(cfg, "target")
    if (word is None) == (words_file is None):
        raise ConfigError("mode=convert: give exactly one of word=<verb> (with source=… target=…) or "
                         "words_file=<file>")
    model.eval()
    if word is not None:
        for key, tense in (("source", source), ("target", target)):
            if tense is None:
                raise ConfigError(f"{key}: missing; pass {key}=<one of {', '.join(model.tenses)}>")
        requests = [(model.tokenizer.check(str(word), "word"), model.tense_index(source, "source"),
                     model.tense_index(target, "target"))]
    else:
        requests = read_words_file(pathlib.Path(str(words_file)), source, target, model)
    converted = model.convert([w for w, _, _ in requests], [s for _, s, _ in requests], [t for _, _, t in requests])
    lines = []
    for (w, s, t), conversion in zip(requests, converted):
        print(f"{w} ({model.tenses[s]}) -> {conversion} ({model.tenses[t]})")
        lines.append(f"{w}\t{model.tenses[s]}\t{model.tenses[t]}\t{conversion}")
    conversions = TextOutput(lines, columns=("word", "source", "target", "conversion"))
    publish(conversions, pathlib.Path(run_dir), "conversions")  # conversions.txt, and a wandb table
    return {"conversions": len(converted)}

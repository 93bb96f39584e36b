"""Why the verb-tense CVAE misses the lab's corner: the same checkpoint scored on verbs it trained on and on
held-out verbs, and its N(0, I) draws taken apart.

    python experiments/cvae_seen_heldout.py <run>/checkpoints/best.ckpt [--verbs 646] [--draws 2000]

Conversions (all 12 ordered tense pairs, greedy from the posterior mean, as ``test/bleu``) of ``--verbs``
training verbs (the lab's protocol: its test words are forms of its training verbs) and of as many test
verbs (ours: held out). Then ``--draws`` z ~ N(0, I), each decoded under the four tenses:

- ``gaussian_score``: the four decodings are the four forms of a verb of the lexicon (the lab's score);
- ``hits_train`` / ``hits_heldout``: of those, how many are training verbs and how many held-out ones, and the
  hits per 1,000 verbs of each kind (a model that memorises its training verbs hits them far more often;
  one that spells hits the verbs it never saw about as often);
- ``real_base_form``: the base (sp) decoding is the base form of some verb; ``real_base_form_paradigm_wrong``:
  it is, but the other three decodings are not that verb's forms;
- ``distinct_hits``: how many different verbs the hits are, and the three hit most often (``most_hit``, with
  their counts): the score counts draws, so a decoder that sends most of N(0, I) to a few verbs scores high.

Writes ``cvae_seen_heldout.json`` to the checkpoint's run folder (or ``--json``) and prints a Markdown table."""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments.restored import restored_model, run_folder  # noqa: E402
from vae_lab.data.loaders import evaluation_loader  # noqa: E402
from vae_lab.data.verb_tense import Collate, PairDataset, conversion_pairs  # noqa: E402
from vae_lab.metrics.tense import gaussian_score  # noqa: E402


@torch.no_grad()
def conversions(model, datamodule, verbs) -> dict[str, float]:
    loader = evaluation_loader(PairDataset(conversion_pairs(verbs, datamodule.tense_pairs)),
                               datamodule.eval_batch_size, Collate(datamodule.tokenizer), 0)
    hypotheses, references = [], []
    for batch in loader:
        h, r = model.text_pairs(batch)
        hypotheses += h
        references += r
    return {**model.text_metrics(hypotheses, references), "pairs": len(references)}


@torch.no_grad()
def draws(model, datamodule, count: int, seed: int) -> dict[str, float]:
    generator = torch.Generator().manual_seed(seed)
    decodings = model.decode_prior(count, generator, model.standard_normal)
    train = {tuple(v) for v in datamodule.train_verbs}
    every = {tuple(v) for v in datamodule.lexicon}
    heldout = every - train
    base_forms: dict[str, set] = {}
    for verb in every:
        base_forms.setdefault(verb[0], set()).add(verb)
    hits = Counter(tuple(d) for d in decodings if tuple(d) in every)
    most_hit = hits.most_common(3)
    hits_train = sum(tuple(d) in train for d in decodings)
    hits_heldout = sum(tuple(d) in heldout for d in decodings)
    real_base = [d for d in decodings if d[0] in base_forms]
    wrong = sum(tuple(d) not in base_forms[d[0]] for d in real_base)
    return {"draws": count, "gaussian_score": gaussian_score(decodings, datamodule.lexicon),
            "hits_train": hits_train, "hits_heldout": hits_heldout,
            "hits_per_1000_train_verbs": 1000 * hits_train / len(train),
            "hits_per_1000_heldout_verbs": 1000 * hits_heldout / max(1, len(heldout)),
            "real_base_form": len(real_base) / count, "real_base_form_paradigm_wrong": wrong / count,
            "distinct_hits": len(hits), "most_hit": [" ".join(v) for v, _ in most_hit],
            "most_hit_counts": [n for _, n in most_hit]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--verbs", type=int, default=646, help="verbs of each kind (646: the whole test split)")
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, datamodule = restored_model(args.checkpoint)
    if not datamodule.test_verbs:
        sys.exit(f"{args.checkpoint}: trained on the lab's files (dataset.path): no held-out verbs to compare")
    generator = torch.Generator().manual_seed(args.seed)
    pick = torch.randperm(len(datamodule.train_verbs), generator=generator)[: args.verbs].tolist()
    result = {"checkpoint": str(args.checkpoint),
              "seen": conversions(model, datamodule, [datamodule.train_verbs[i] for i in pick]),
              "heldout": conversions(model, datamodule, datamodule.test_verbs[: args.verbs]),
              "normal_draws": draws(model, datamodule, args.draws, args.seed)}
    seen, held, d = result["seen"], result["heldout"], result["normal_draws"]
    print("| verbs | pairs | BLEU-4 | exact match |\n|---|---|---|---|")
    print(f"| training (seen) | {seen['pairs']} | {seen['bleu']:.3f} | {seen['exact_match']:.3f} |")
    print(f"| test (held out) | {held['pairs']} | {held['bleu']:.3f} | {held['exact_match']:.3f} |")
    print(f"\nN(0, I), {d['draws']} draws: Gaussian score {d['gaussian_score']:.3f} "
          f"({d['hits_train']} training verbs, {d['hits_heldout']} held-out; per 1,000 verbs "
          f"{d['hits_per_1000_train_verbs']:.2f} / {d['hits_per_1000_heldout_verbs']:.2f}); base form a real verb's "
          f"{d['real_base_form']:.3f}, of which the paradigm is wrong {d['real_base_form_paradigm_wrong']:.3f}; "
          f"{d['distinct_hits']} distinct verbs hit, most often {d['most_hit']} ({d['most_hit_counts']} times)")
    path = args.json or run_folder(args.checkpoint) / "cvae_seen_heldout.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Training throughput of the sentence VAE: tokens/second and peak memory, through the real
Lightning Trainer on the real PTB; optionally side by side with a reference implementation.

    python experiments/bench_text_vae.py                       # reference point: GRU 256, emb 300, z 16, batch 32
    python experiments/bench_text_vae.py model.rnn_type=lstm dataset.batch_size=64 --steps 300 --threads 2
    python experiments/bench_text_vae.py --against /path/to/Sentence-VAE --rounds 2 --profile
    python experiments/bench_text_vae.py trainer.precision=bf16-mixed

Positional arguments are Hydra overrides of conf/train.yaml. Tokens are the predicted target tokens
(words + <eos>), the same count a reference implementation's masked loss sums over. The clock runs
from the end of the warm-up steps to the end of the last measured step (forward, backward,
clipping, optimizer step, logging: everything Lightning does in a training step).

``--against <checkout>`` runs timbmg/Sentence-VAE's own ``model.py`` (its ``SentenceVAE`` and the
training step of its ``train.py``: loss_fn, Adam, zero_grad/backward/step) on the same PTB sentences
in its own batch format (random batches of 32, <sos> + words / words + <eos>, padded to 60), in the
same process, alternating ``--rounds`` times with vae_lab, and prints both figures and the ratio.
Its batches are built before the clock starts (its DataLoader's work is not counted: a favour).
``--profile`` prints where one vae_lab step spends its time (experiments/profile_text_step.py).

``--eval-sentences N`` then tests the trained module on N random test sentences (``eval.test_samples``
importance samples, ``--eval-samples`` to change it) and prints the cost of a whole test of the split
as a ratio to one training epoch (both from throughputs measured here: test tokens x samples per
second, training tokens per second), and the peak resident memory of the training steps and of the
test separately (a thread samples /proc/self/statm every 5 ms).
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import random
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments.profile_text_step import profile_sentence_vae_step  # noqa: E402
from vae_lab.train import build_datamodule, build_module  # noqa: E402

REFERENCE = ["model=vae", "model.rnn_type=gru", "model.embedding_dim=300", "model.hidden_dim=256",
             "model.latent_dim=16", "dataset.batch_size=32", "model.word_dropout=0.0",
             "model.embedding_dropout=0.5"]


class ThroughputMeter(pl.Callback):
    """Counts predicted tokens and wall time over the steps after ``warmup``."""

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps, self.tokens, self.start, self.elapsed = warmup, steps, 0, None, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step  # already advanced past this batch
        if step == self.warmup:
            if batch["tokens"].is_cuda:
                torch.cuda.synchronize()
            self.start = time.perf_counter()
        elif step > self.warmup:
            self.tokens += tokens_of(batch)
            if step == self.warmup + self.steps:
                if batch["tokens"].is_cuda:
                    torch.cuda.synchronize()
                self.elapsed = time.perf_counter() - self.start
                trainer.should_stop = True


def compose_config(overrides: list[str]):
    conf_dir = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(version_base="1.3", config_dir=conf_dir):
        cfg = compose("train", overrides=[*REFERENCE, *overrides, "logger=none"])
    with open_dict(cfg):
        cfg.paths.output_dir = "/tmp/vae_lab_bench"
    return cfg


class PeakMemory:
    """Peak resident set size (MiB) while the ``with`` block runs, sampled every 5 ms."""

    def __enter__(self):
        self.peak, self.running = rss_mb(), True
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self):
        while self.running:
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, rss_mb())


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def tokens_of(batch) -> int:
    return int(batch["lengths"].sum()) + batch["lengths"].numel()


def vae_lab_throughput(cfg, datamodule, steps: int, warmup: int, accelerator: str, keep: list | None = None):
    """Tokens/s and milliseconds a step of ``steps`` Lightning training steps after ``warmup`` (the
    trained module and trainer appended to ``keep``)."""
    pl.seed_everything(cfg.seed)
    module = build_module(cfg, datamodule)
    meter = ThroughputMeter(warmup, steps)
    trainer = pl.Trainer(accelerator=accelerator, devices=1, max_steps=warmup + steps,
                         limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[meter],
                         gradient_clip_val=cfg.trainer.gradient_clip_val,
                         precision=cfg.trainer.get("precision", "32-true"),
                         log_every_n_steps=cfg.trainer.log_every_n_steps)
    trainer.fit(module, datamodule=datamodule)
    if keep is not None:
        keep.extend([module, trainer])
    return meter.tokens / meter.elapsed, 1000 * meter.elapsed / steps


def evaluation_cost(cfg, datamodule, module, train_tokens_per_s: float, sentences: int, accelerator: str) -> str:
    """A whole test's cost in training epochs, and the test's peak memory, from a random subset of
    ``sentences`` test sentences (seeded: the same subset whatever the code), scaled by tokens."""
    test_tokens = sum(tokens_of(b) for b in datamodule.test_dataloader())
    train_tokens = sum(tokens_of(b) for b in datamodule.train_dataloader())
    dataset = datamodule.datasets["test"]
    dataset.ids = [dataset.ids[i] for i in random.Random(0).sample(range(len(dataset.ids)), sentences)]
    measured = sum(tokens_of(b) for b in datamodule.test_dataloader())
    trainer = pl.Trainer(accelerator=accelerator, devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, precision=cfg.trainer.get("precision", "32-true"))
    samples = module.num_eval_samples["test"]
    with PeakMemory() as memory:
        start = time.perf_counter()
        trainer.test(module, datamodule=datamodule, verbose=False)
        seconds = time.perf_counter() - start
    test_s = seconds * test_tokens / measured
    epoch_s = train_tokens / train_tokens_per_s
    return (f"test ({samples} samples; {sentences} random test sentences, {measured} tokens, {seconds:.0f} s): "
            f"whole test set {test_s / 60:.1f} min = {test_s / epoch_s:.2f} training epochs "
            f"({epoch_s / 60:.1f} min at the measured training speed); peak_rss_test_mb={memory.peak:.0f} "
            f"nll={module.final_metrics.get('test/nll', float('nan')):.3f}")


def load_reference(checkout: Path):
    """timbmg/Sentence-VAE's ``SentenceVAE`` class (its model.py imports its utils.py)."""
    sys.path.insert(0, str(checkout))
    try:
        spec = importlib.util.spec_from_file_location("reference_model", checkout / "model.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(checkout))
    return module.SentenceVAE


def reference_batches(dataset, vocab, batch_size: int, count: int, max_length: int = 60, seed: int = 0):
    """The reference's batch format: input = <sos> w.. (cut to 60), target = w.. <eos>, length =
    len(input), both padded to 60; shuffled, like its DataLoader(shuffle=True)."""
    order = list(range(len(dataset)))
    random.Random(seed).shuffle(order)
    batches = []
    for b in range(count):
        rows = [dataset[i].tolist()[: max_length - 1] for i in order[b * batch_size:(b + 1) * batch_size]]
        inputs = torch.full((len(rows), max_length), vocab.pad, dtype=torch.long)
        targets = torch.full((len(rows), max_length), vocab.pad, dtype=torch.long)
        for r, ids in enumerate(rows):
            inputs[r, : len(ids) + 1] = torch.tensor([vocab.sos, *ids])
            targets[r, : len(ids) + 1] = torch.tensor([*ids, vocab.eos])
        batches.append({"input": inputs, "target": targets,
                        "length": torch.tensor([len(ids) + 1 for ids in rows])})
    return batches


def reference_throughput(reference_class, vocab, batches, warmup: int, embedding_dropout: float = 0.5) -> float:
    """Tokens/s of the reference's training step (its train.py, split == 'train', logistic KL
    annealing with its defaults k=0.0025, x0=2500) over ``batches`` after ``warmup`` of them."""
    torch.manual_seed(0)
    model = reference_class(vocab_size=len(vocab), embedding_size=300, rnn_type="gru", hidden_size=256,
                            word_dropout=0.0, embedding_dropout=embedding_dropout, latent_size=16,
                            sos_idx=vocab.sos, eos_idx=vocab.eos, pad_idx=vocab.pad, unk_idx=vocab.unk,
                            max_sequence_length=60)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    nll = torch.nn.NLLLoss(ignore_index=vocab.pad, reduction="sum")
    tracker = torch.Tensor()
    tokens, start = 0, None
    for step, batch in enumerate(batches):
        if step == warmup:
            start = time.perf_counter()
        logp, mean, logv, _ = model(batch["input"], batch["length"])
        target = batch["target"][:, : int(torch.max(batch["length"]).item())].contiguous().view(-1)
        nll_loss = nll(logp.view(-1, logp.size(2)), target)
        kl_loss = -0.5 * torch.sum(1 + logv - mean.pow(2) - logv.exp())
        kl_weight = float(1 / (1 + np.exp(-0.0025 * (step - 2500))))
        loss = (nll_loss + kl_weight * kl_loss) / batch["input"].size(0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        tracker = torch.cat((tracker, loss.data.view(1, -1)), dim=0)
        if step >= warmup:
            tokens += int(batch["length"].sum())
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--against", type=Path, default=None, help="a timbmg/Sentence-VAE checkout")
    parser.add_argument("--rounds", type=int, default=1, help="alternations of vae_lab and the reference")
    parser.add_argument("--profile", action="store_true", help="where one vae_lab step spends its time")
    parser.add_argument("--eval-sentences", type=int, default=0, help="random test sentences to time (0: no test)")
    parser.add_argument("--eval-samples", type=int, default=None, help="importance samples of the test")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = compose_config(args.overrides + ([f"eval.test_samples={args.eval_samples}"] if args.eval_samples else []))
    datamodule = build_datamodule(cfg)
    reference_class = None
    if args.against is not None:
        if not (args.against / "model.py").is_file():
            raise SystemExit(f"error: --against {args.against}: no model.py; pass a timbmg/Sentence-VAE checkout")
        reference_class = load_reference(args.against)
        batches = reference_batches(datamodule.datasets["train"], datamodule.vocab, 32, args.warmup + args.steps)
    ours, theirs, step_ms, kept = [], [], [], []
    for _ in range(args.rounds):
        with PeakMemory() as memory:
            tokens_per_s, ms = vae_lab_throughput(cfg, datamodule, args.steps, args.warmup, args.accelerator, kept)
        ours.append(tokens_per_s)
        step_ms.append(ms)
        if reference_class is not None:
            theirs.append(reference_throughput(reference_class, datamodule.vocab, batches, args.warmup))
    peak_mb = memory.peak
    gpu = f" peak_gpu_mb={torch.cuda.max_memory_allocated() / 2**20:.0f}" if torch.cuda.is_available() else ""
    m = cfg.model
    rounds = " ".join(f"{x:.0f}" for x in ours)
    print(f"vae_lab tokens/s={statistics.median(ours):.0f} (rounds: {rounds}) peak_rss_train_mb={peak_mb:.0f}{gpu} "
          f"threads={args.threads} precision={cfg.trainer.get('precision', '32-true')} ({m.rnn_type} "
          f"{m.hidden_dim}, emb {m.embedding_dim}, z {m.latent_dim}, batch {cfg.dataset.batch_size})")
    if theirs:
        rounds = " ".join(f"{x:.0f}" for x in theirs)
        ratios = [a / b for a, b in zip(ours, theirs)]
        print(f"reference tokens/s={statistics.median(theirs):.0f} (rounds: {rounds}) "
              f"ratio={statistics.median(ratios):.2f} (per round: {' '.join(f'{r:.2f}' for r in ratios)}; "
              f"geometric mean {math.exp(statistics.mean(map(math.log, ratios))):.2f})")
    if args.eval_sentences:
        print(evaluation_cost(cfg, datamodule, kept[-2], statistics.median(ours), args.eval_sentences, args.accelerator))
    if args.profile:
        print(profile_sentence_vae_step(cfg, datamodule, lightning_ms=statistics.median(step_ms)))


if __name__ == "__main__":
    main()

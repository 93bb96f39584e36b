"""Where one training step of the sentence VAE spends its time, part by part, on the same batches.

Each part runs forward and backward on its own (inputs are leaves that take a gradient, the
backward gets a gradient of the output's shape), so the parts add up to a step without Lightning:

    data        drawing and collating a batch (the train DataLoader)
    encoder     embedding + RNN encoder + posterior layer, forward and backward
    decoder RNN teacher-forced decoder RNN (initial state from z), forward and backward
    output      the output layer on the real target positions, forward and both backward GEMMs
    loss        cross-entropy over the vocabulary at those positions, forward and backward
    output+loss the two together as the model computes them (vae_lab.nets.output.target_log_prob where
                it exists, else the layer then F.cross_entropy)
    clip        gradient-norm clipping (trainer.gradient_clip_val)
    optimizer   Adam's step and zero_grad
    step        the whole step without Lightning: log_weights, objective, backward, clip, step
    lightning   one Lightning training step (measured by the caller) minus ``step``

Every part runs under the configured ``trainer.precision`` (autocast for bf16-mixed). Used by
``experiments/bench_text_vae.py --profile``.
"""
from __future__ import annotations

import contextlib
import time
from itertools import islice

import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from vae_lab.objectives import training_objective
from vae_lab.train import build_module


def _clock(fn, batches, precision: str = "32-true", repeats: int = 1) -> float:
    """Milliseconds per batch of ``fn(batch)``, after one warm-up call, under ``precision``."""
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16-mixed"
                else contextlib.nullcontext())
    with autocast:
        fn(batches[0])
        start = time.perf_counter()
        for _ in range(repeats):
            for batch in batches:
                fn(batch)
    return 1000 * (time.perf_counter() - start) / (repeats * len(batches))


def _output_and_loss(model):
    """The output layer and the loss as this checkout computes them."""
    try:
        from vae_lab.nets.output import target_log_prob
    except ImportError:  # a checkout from before the fused output softmax
        return lambda hidden, targets: F.cross_entropy(model.output(hidden), targets, reduction="sum")
    return lambda hidden, targets: -target_log_prob(model.output[:-1](hidden), model.output[-1], targets).sum()


def profile_sentence_vae_step(cfg, datamodule, num_batches: int = 40, lightning_ms: float | None = None) -> str:
    """A table of milliseconds per step, by part (see the module docstring)."""
    torch.manual_seed(cfg.seed)
    module = build_module(cfg, datamodule)
    model = module.model.train()
    optimizer = instantiate(cfg.optimizer)(params=model.parameters())
    clip = cfg.trainer.gradient_clip_val
    loader = datamodule.train_dataloader()
    start = time.perf_counter()
    batches = list(islice(iter(loader), num_batches))
    parts = {"data": 1000 * (time.perf_counter() - start) / num_batches}

    def encoder(batch):
        params = model.posterior_params(batch)
        (params.mean.sum() + params.log_var.sum()).backward()

    decoder_io = []
    for batch in batches:
        inputs, targets = model.decoder_io(batch["tokens"], batch["lengths"])
        embedded = model.embedding(inputs).detach().requires_grad_()
        z = torch.randn(inputs.shape[0], model.latent_dim, requires_grad=True)
        decoder_io.append((embedded, z, targets))

    def decoder(item):
        embedded, z, _ = item
        hidden = model.decoder(embedded, z)
        hidden.backward(torch.ones_like(hidden))

    outputs = []
    for embedded, z, targets in decoder_io:
        with torch.no_grad():
            hidden = model.decoder(embedded, z)
        mask = targets.ne(model.vocab.pad)
        outputs.append((hidden[mask].requires_grad_(), targets[mask]))

    def output(item):
        hidden, _ = item
        logits = model.output(hidden)
        logits.backward(torch.ones_like(logits))

    logits = []
    with torch.no_grad():
        for hidden, targets in outputs:
            logits.append((model.output(hidden).requires_grad_(), targets))

    def loss(item):
        scores, targets = item
        F.cross_entropy(scores, targets, reduction="sum").backward()

    fused = _output_and_loss(model)

    def output_and_loss(item):
        hidden, targets = item
        fused(hidden, targets).backward()

    def clip_norm(_):
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)

    def step(_):
        optimizer.step()
        optimizer.zero_grad()

    def whole(batch):
        out = training_objective(model.log_weights(batch, 1), 1.0)
        out.loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad()

    precision = str(cfg.trainer.get("precision", "32-true"))
    parts["encoder"] = _clock(encoder, batches, precision)
    parts["decoder RNN"] = _clock(decoder, decoder_io, precision)
    parts["output"] = _clock(output, outputs, precision)
    parts["loss"] = _clock(loss, logits, precision)
    parts["output+loss"] = _clock(output_and_loss, outputs, precision)
    for p in model.parameters():  # gradients everywhere, so clipping and Adam see every parameter
        p.grad = torch.full_like(p, 1e-3)
    if clip:
        parts["clip"] = _clock(clip_norm, batches, precision)
    parts["optimizer"] = _clock(lambda _: optimizer.step(), batches, precision)
    optimizer.zero_grad()
    parts["step"] = _clock(whole, batches, precision)
    tokens = sum(int(b["lengths"].sum()) + b["lengths"].numel() for b in batches) / num_batches
    lines = [f"one step, {tokens:.0f} target tokens on average, {torch.get_num_threads()} threads, {precision} (ms):"]
    lines += [f"  {name:<12} {ms:8.1f}" for name, ms in parts.items()]
    if lightning_ms is not None:
        lines.append(f"  {'lightning':<12} {lightning_ms - parts['step']:8.1f}  (Lightning step {lightning_ms:.1f})")
    return "\n".join(lines)

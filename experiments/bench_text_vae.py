"""Training throughput of the sentence VAE: tokens/second and peak memory, through the real
Lightning Trainer on the real PTB.

    python experiments/bench_text_vae.py                       # reference point: GRU 256, emb 300, z 16, batch 32
    python experiments/bench_text_vae.py model.rnn_type=lstm dataset.batch_size=64 --steps 300 --threads 2

Positional arguments are Hydra overrides of conf/train.yaml. Tokens are the predicted target tokens
(words + <eos>), the same count a reference implementation's masked loss sums over. The clock runs
from the end of the warm-up steps to the end of the last measured step (forward, backward,
clipping, optimizer step, logging: everything Lightning does in a training step).
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import open_dict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
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
            self.tokens += int(batch["lengths"].sum()) + batch["lengths"].numel()
            if step == self.warmup + self.steps:
                if batch["tokens"].is_cuda:
                    torch.cuda.synchronize()
                self.elapsed = time.perf_counter() - self.start
                trainer.should_stop = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--accelerator", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    conf_dir = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(version_base="1.3", config_dir=conf_dir):
        cfg = compose("train", overrides=[*REFERENCE, *args.overrides, "logger=none"])
    with open_dict(cfg):
        cfg.paths.output_dir = "/tmp/vae_lab_bench"
    pl.seed_everything(cfg.seed)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    meter = ThroughputMeter(args.warmup, args.steps)
    trainer = pl.Trainer(accelerator=args.accelerator, devices=1, max_steps=args.warmup + args.steps,
                         limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[meter],
                         gradient_clip_val=cfg.trainer.gradient_clip_val,
                         log_every_n_steps=cfg.trainer.log_every_n_steps)
    trainer.fit(module, datamodule=datamodule)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = f" peak_gpu_mb={torch.cuda.max_memory_allocated() / 2**20:.0f}" if torch.cuda.is_available() else ""
    m = cfg.model
    print(f"vae_lab tokens/s={meter.tokens / meter.elapsed:.0f} steps/s={args.steps / meter.elapsed:.2f} "
          f"peak_rss_mb={peak_mb:.0f}{gpu} threads={args.threads} ({m.rnn_type} {m.hidden_dim}, emb "
          f"{m.embedding_dim}, z {m.latent_dim}, batch {cfg.dataset.batch_size})")


if __name__ == "__main__":
    main()

"""Training throughput of a discrete VAE on binarized MNIST, and the share of a step spent in the RBM
sampler (the log Z gradient's negative phase).

    python experiments/bench_dvae.py --threads 1 [--model dvaepp_exp --struct 2-layer-nonlin --sampler pcd]
    python experiments/bench_dvae.py --threads 1 --chains 100 --sweeps 10     # a quick-CPU-study setting

Builds the model exactly as ``python -m vae_lab`` does (Hydra compose + train.build_module), runs
``--steps`` optimiser steps on real batches (after ``--warmup``), and prints images/s, ms a step and
the sampler's share, as Markdown rows.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

import vae_lab.train as train

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def measure(args) -> dict[str, float]:
    overrides = [f"model={args.model}", f"struct={args.struct}", f"sampler={args.sampler}", "logger=none",
                 f"k={args.k}", f"paths.output_dir={tempfile.mkdtemp()}"]
    if args.chains:
        overrides.append(f"sampler.num_chains={args.chains}")
    if args.sweeps:
        overrides.append(f"sampler.{'num_sweeps' if args.sampler == 'pcd' else 'num_temperatures'}={args.sweeps}")
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose(config_name="train", overrides=overrides)
    torch.manual_seed(0)
    datamodule = train.build_datamodule(cfg)
    module = train.build_module(cfg, datamodule)
    model, sampler = module.model.to(args.device).train(), module.model.prior.sampler
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, eps=1e-3)
    spent = [0.0]
    real_sample = sampler.sample

    def timed_sample(*a, **kw):
        start = time.perf_counter()
        out = real_sample(*a, **kw)
        spent[0] += time.perf_counter() - start
        return out

    sampler.sample = timed_sample
    batches = iter(datamodule.train_dataloader())
    from vae_lab.objectives import training_objective

    def step():
        batch = {key: value.to(args.device) if torch.is_tensor(value) else value for key, value in next(batches).items()}
        out = training_objective(model.log_weights(batch, cfg.k), 1.0, bound=cfg.objective.bound)
        loss = out.loss + model.regularizer()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    spent[0] = 0.0
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if torch.device(args.device).type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return {"images_per_s": args.steps * cfg.dataset.batch_size / elapsed, "ms_per_step": 1000 * elapsed / args.steps,
            "sampler_share": spent[0] / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="dvaepp_exp")
    parser.add_argument("--struct", default="2-layer-nonlin")
    parser.add_argument("--sampler", default="pcd")
    parser.add_argument("--chains", type=int, default=None)
    parser.add_argument("--sweeps", type=int, default=None, help="PCD sweeps a step (PA: temperatures)")
    parser.add_argument("--k", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = measure(args)
    print("| model | struct | sampler | chains | sweeps | k | threads | images/s | ms/step | sampler share |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.model} | {args.struct} | {args.sampler} | {args.chains or 'default'} | {args.sweeps or 'default'} "
          f"| {args.k} | {args.threads} | {result['images_per_s']:.0f} | {result['ms_per_step']:.1f} "
          f"| {result['sampler_share']:.0%} |")


if __name__ == "__main__":
    main()

"""Speed of the RBM prior's samplers at the DVAE# sizes, and log Z error against wall time.

    python experiments/bench_rbm.py [--device cpu|cuda] [--threads N] [--quick]

Prints, for 100+100 and 200+200 units with 1000 chains: block-Gibbs sweeps per second, the time of the
two plain matmuls of a sweep's shapes measured in the same run (the matmul bound) and the fraction of
that bound a sweep reaches, the split of a sweep's time (matmul / sigmoid / uniforms), a sweep's time over one plain
[chains]x n x n matmul (target: at most 3), the time of one
population-annealing log Z and of one AIS evaluation log Z (default settings). Then, on a 20+20 RBM with
exact log Z, the RMS log Z error of AIS and population annealing against wall time over a sweep of
temperature counts (and AIS's own standard error), plotted to experiments/results/rbm_log_z_error_vs_time.png; all figures go to
experiments/results/bench_rbm.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from vae_lab.priors import AIS, RBM, PopulationAnnealing
from vae_lab.priors.boltzmann import GibbsSweeper

RESULTS = Path(__file__).resolve().parent / "results"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn, device: torch.device, repeats: int, rounds: int) -> float:
    """Fastest mean seconds per call over `rounds` rounds of `repeats` calls (after one warm-up call)."""
    fn()
    synchronize(device)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        synchronize(device)
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def random_rbm(n_left: int, n_right: int, scale: float, seed: int, device, dtype=torch.float32) -> RBM:
    generator = torch.Generator().manual_seed(seed)
    rbm = RBM(n_left, n_right, dtype=dtype)
    with torch.no_grad():
        for param in rbm.parameters():
            param.copy_(torch.randn(param.shape, generator=generator, dtype=dtype) * scale)
    return rbm.to(device)


def bench_gibbs(n: int, num_chains: int, device: torch.device, rounds: int) -> dict:
    """Sweeps per second against the matmul bound (the sweep's two matmuls alone) at n + n units."""
    rbm = random_rbm(n, n, 0.05, seed=0, device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    a, b, w = (p.detach() for p in (rbm.bias_left, rbm.bias_right, rbm.weight))
    sweeper = GibbsSweeper(num_chains, n, n, device=device, dtype=w.dtype)
    sweeper.set_params(a, b, w)
    z_left = (torch.rand(num_chains, n, generator=generator, device=device) < 0.5).float()  # [chains, n_left]
    sweeps = 20
    sweep_s = best_time(lambda: sweeper.run(z_left, sweeps, generator), device, 1, rounds) / sweeps
    out_right, out_left = torch.empty(num_chains, n, device=device), torch.empty(num_chains, n, device=device)
    z_right = sweeper.z_right.clone()

    def matmuls():
        torch.addmm(b, z_left, w, out=out_right)
        torch.addmm(a, z_right, w.t(), out=out_left)

    matmul_s = best_time(matmuls, device, sweeps, rounds)
    sigmoid_s = 2 * best_time(lambda: out_right.sigmoid_(), device, sweeps, rounds)
    uniform_s = 2 * best_time(lambda: sweeper.words_left.draw(generator), device, sweeps, rounds)
    one_matmul_s = best_time(lambda: torch.mm(z_left, w, out=out_right), device, sweeps, rounds)
    flops = 2 * 2 * num_chains * n * n
    return {"units": f"{n}+{n}", "chains": num_chains, "sweeps_per_s": 1 / sweep_s, "sweep_ms": 1e3 * sweep_s,
            "matmul_bound_ms": 1e3 * matmul_s, "fraction_of_matmul_bound": matmul_s / sweep_s,
            "sweep_gflops": flops / sweep_s / 1e9, "matmul_gflops": flops / matmul_s / 1e9,
            "sigmoid_ms": 1e3 * sigmoid_s, "uniforms_ms": 1e3 * uniform_s,
            "one_matmul_ms": 1e3 * one_matmul_s, "sweep_over_one_matmul": sweep_s / one_matmul_s}


def bench_log_z(n: int, device: torch.device) -> dict:
    """Seconds for one population-annealing and one AIS log Z with the default settings."""
    rbm = random_rbm(n, n, 0.05, seed=1, device=device)
    pa, ais = PopulationAnnealing(rbm, seed=0), AIS(rbm, seed=0)
    return {"units": f"{n}+{n}",
            "population_annealing_s": best_time(pa.estimate_log_z, device, 1, 1),
            "population_annealing_settings": f"{pa.num_chains} chains, {pa.num_temperatures} temperatures",
            "ais_s": best_time(ais.estimate_log_z, device, 1, 1),
            "ais_settings": f"{ais.num_chains} chains, {ais.num_temperatures} temperatures"}


def error_vs_time(device: torch.device, temperatures: list[int], seeds: int, scale: float) -> dict:
    """RMS log Z error and mean wall time of AIS and PA on a 20+20 RBM (a, b, W ~ N(0, scale^2)), exact log Z."""
    rbm = random_rbm(20, 20, scale, seed=2, device=device)
    exact = rbm.exact_log_z().item()
    curves = {}
    for name, make in [("AIS (1024 chains)", lambda t, s: AIS(rbm, num_temperatures=t, seed=s)),
                       ("population annealing (1000 chains)",
                        lambda t, s: PopulationAnnealing(rbm, num_temperatures=t, seed=s))]:
        points = []
        for num_temperatures in temperatures:
            errors, seconds, std_errs = [], [], []
            for seed in range(seeds):
                sampler = make(num_temperatures, seed)
                synchronize(device)
                start = time.perf_counter()
                result = sampler.estimate_log_z()
                log_z = result.log_z.item()
                synchronize(device)
                seconds.append(time.perf_counter() - start)
                std_errs.append(float("nan") if result.log_z_std_err is None else result.log_z_std_err.item())
                errors.append(log_z - exact)
            errors_t = torch.tensor(errors, dtype=torch.float64)
            points.append({"temperatures": num_temperatures, "seconds": sum(seconds) / seeds,
                           "rms_error": errors_t.pow(2).mean().sqrt().item(), "mean_error": errors_t.mean().item(),
                           "reported_std_err": sum(std_errs) / seeds})
            print(f"  {name:36s} T={num_temperatures:5d}  {points[-1]['seconds']:7.3f} s  "
                  f"rms error {points[-1]['rms_error']:.4f}  mean error {points[-1]['mean_error']:+.4f}", flush=True)
        curves[name] = points
    return {"rbm": f"20+20, a, b, W ~ N(0, {scale}^2)", "exact_log_z": exact, "seeds": seeds, "curves": curves}


def plot(figures: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for (name, points), marker, color in zip(figures["curves"].items(), ["o", "s"], ["tab:blue", "tab:orange"]):
        seconds = [p["seconds"] for p in points]
        ax.loglog(seconds, [p["rms_error"] for p in points], marker=marker, color=color, label=f"{name}: RMS error")
        if name.startswith("AIS"):
            ax.loglog(seconds, [p["reported_std_err"] for p in points], linestyle=":", color=color,
                      label="AIS: its reported standard error")
        for p in points:
            ax.annotate(str(p["temperatures"]), (p["seconds"], p["rms_error"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
    ax.axhline(0.05, color="grey", linestyle="--", linewidth=0.8, label="0.05 nats")
    ax.set_xlabel("wall time per log Z estimate (s)")
    ax.set_ylabel(f"RMS error of log Z (nats, {figures['seeds']} seeds)")
    ax.set_title(f"log Z of a {figures['rbm']} (exact {figures['exact_log_z']:.2f})\npoint labels: temperatures",
                 fontsize=10)
    ax.grid(True, which="both", linewidth=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument("--chains", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=7, help="timing rounds; the fastest is kept")
    parser.add_argument("--seeds", type=int, default=10, help="runs per point of the error-vs-time curves")
    parser.add_argument("--plot-scale", type=float, default=1.0, help="std of the 20+20 RBM's parameters")
    parser.add_argument("--quick", action="store_true", help="fewer points, for a smoke test")
    parser.add_argument("--gibbs-only", action="store_true", help="only the sweep timings (no log Z figures)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = (torch.cuda.get_device_name(device) if device.type == "cuda"
               else f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"device {device} ({machine}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f}")
    report = {"device": str(device), "machine": machine, "threads": torch.get_num_threads(),
              "load_average": os.getloadavg()[0], "torch": torch.__version__, "gibbs": [], "log_z": []}
    for n in (100, 200):
        gibbs = bench_gibbs(n, args.chains, device, args.rounds)
        report["gibbs"].append(gibbs)
        print(f"gibbs {gibbs['units']}, {gibbs['chains']} chains: {gibbs['sweeps_per_s']:8.0f} sweeps/s "
              f"({gibbs['sweep_ms']:.3f} ms; matmul bound {gibbs['matmul_bound_ms']:.3f} ms, "
              f"{100 * gibbs['fraction_of_matmul_bound']:.0f}% of it, {gibbs['sweep_gflops']:.1f} of "
              f"{gibbs['matmul_gflops']:.1f} GFLOP/s; sigmoids {gibbs['sigmoid_ms']:.3f} ms, "
              f"uniforms {gibbs['uniforms_ms']:.3f} ms)", flush=True)
        verdict = "met" if gibbs["sweep_over_one_matmul"] <= 3 else "NOT met"
        print(f"  a sweep takes {gibbs['sweep_over_one_matmul']:.2f}x one {args.chains}x{n}x{n} matmul "
              f"({gibbs['one_matmul_ms']:.3f} ms); target <= 3x: {verdict}", flush=True)
    if args.gibbs_only:
        return
    for n in (100, 200):
        log_z = bench_log_z(n, device)
        report["log_z"].append(log_z)
        print(f"log Z {log_z['units']}: population annealing {log_z['population_annealing_s']:.2f} s "
              f"({log_z['population_annealing_settings']}), AIS {log_z['ais_s']:.2f} s ({log_z['ais_settings']})",
              flush=True)
    temperatures = [10, 100, 1000] if args.quick else [10, 30, 100, 300, 1000, 3000]
    print("log Z error against wall time, 20+20 RBM:")
    report["error_vs_time"] = error_vs_time(device, temperatures, 2 if args.quick else args.seeds, args.plot_scale)
    plot(report["error_vs_time"], RESULTS / "rbm_log_z_error_vs_time.png")
    (RESULTS / "bench_rbm.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS / 'rbm_log_z_error_vs_time.png'} and {RESULTS / 'bench_rbm.json'}")


if __name__ == "__main__":
    main()

"""Wall time of a small run at 1 and 2 (or more) torch threads, on an idle machine and with every core
kept busy by other processes: why ``torch_threads=auto`` picks fewer threads when the load is high.

    python experiments/bench_threads.py                      # debug=fast, threads 1 and 2, idle then loaded
    python experiments/bench_threads.py --threads 1 2 auto --repeats 3 -- debug=fast model=dvaepp_exp

Each run is ``python -m vae_lab <overrides> logger=none torch_threads=N`` in a fresh process (its
start-up included: what a user waits for). "Loaded": one busy-looping process per core for the
duration of the runs (a minute of it before the runs when ``auto`` is timed: the load average it
reads is a one-minute mean). Prints the median wall time of ``--repeats`` runs for each setting.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def spin(stop) -> None:
    while not stop.is_set():
        sum(range(10_000))


def wall_time(overrides: list[str], threads: str, folder: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vae_lab", *overrides, "logger=none", f"torch_threads={threads}",
                    f"hydra.run.dir={folder}"], cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", nargs="+", default=["1", "2"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*", default=["debug=fast"])
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start; {' '.join(args.overrides)}")
    with tempfile.TemporaryDirectory() as tmp:
        for condition in ("idle", "loaded"):
            stop = multiprocessing.Event()
            spinners = [multiprocessing.Process(target=spin, args=(stop,)) for _ in range(os.cpu_count() or 1)
                        if condition == "loaded"]
            for process in spinners:
                process.start()
            if spinners and "auto" in args.threads:
                time.sleep(60)  # the load average that torch_threads=auto reads is a 1-minute mean
            try:
                times = {t: [] for t in args.threads}
                for repeat in range(args.repeats):  # settings alternate, so drifts of the machine hit each alike
                    for threads in args.threads:
                        times[threads].append(wall_time(args.overrides, threads, Path(tmp) / f"{condition}{threads}{repeat}"))
            finally:
                stop.set()
                for process in spinners:
                    process.join()
            cells = ", ".join(f"torch_threads={t}: {statistics.median(v):.1f} s" for t, v in times.items())
            print(f"{condition:6s} {cells}", flush=True)


if __name__ == "__main__":
    main()

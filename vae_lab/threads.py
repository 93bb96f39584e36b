"""``torch_threads``: how many CPU threads a run gives torch."""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def torch_threads(setting: int | str | None) -> int | None:
    """``torch_threads``: a number as given; ``auto``: the cores the last minute's load average leaves
    free (at least 1), since intra-op threads on cores that other processes keep busy make small models
    several times slower (README, Benchmarks); null: torch's default (one per core)."""
    if setting != "auto":
        return setting
    machine = os.cpu_count() or 1
    ours = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else machine  # a cluster job's share
    load = os.getloadavg()[0]
    threads = max(1, min(ours, machine - round(load)))
    log.info("torch_threads=auto: %d (%d cores of %d for this process, load average %.1f)", threads, ours, machine, load)
    return threads

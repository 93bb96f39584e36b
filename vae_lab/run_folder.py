"""One writer per run folder, and no write into a folder a run may not have.

A run holds ``<run folder>/.vae_lab.lock`` under an exclusive ``flock`` for its whole life (``claim``); the
kernel drops the lock when the process ends, however it ends, so a killed run's lock file never blocks
its resume. ``before_hydra`` runs on the command line before Hydra writes anything (its ``.hydra/`` files
and its log): a training run into a folder that holds checkpoints, or into one another live run holds,
stops there with one line and the folder untouched; a resume (``mode=train run_dir=X``) is pointed at X
itself (Hydra keeps X's ``.hydra/`` record as it is and appends to its log), so it leaves no stray folder.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import time
from pathlib import Path

from vae_lab.errors import ConfigError, RunFolderError

LOCK = ".vae_lab.lock"
HYDRA_FILES = (".hydra", "__main__.log", LOCK)  # what a run folder holds before the run has written anything
_held: dict[Path, int] = {}  # this process's locks: folder -> file descriptor


def is_first_process() -> bool:
    """False in the processes Lightning's DDP launcher starts for ranks 1.. (they share rank 0's folder)."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def holds_checkpoints(folder: Path) -> bool:
    return any((Path(folder) / "checkpoints").glob("*.ckpt"))


def _holder(lock: Path) -> str:
    try:
        return lock.read_text().strip() or "another process"
    except OSError:
        return "another process"


def claim(folder: Path | str, command: str = "") -> None:
    """Hold ``folder``'s lock until this process ends (or ``release``); a RunFolderError if another live
    process holds it. Re-entrant within a process."""
    folder = Path(folder).resolve()
    if folder in _held or not is_first_process():
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise RunFolderError(f"{folder}: cannot write the run folder ({error.strerror}); give "
                             "hydra.run.dir=<a writable folder>") from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise RunFolderError(f"{folder} is in use by {_holder(folder / LOCK)}; wait for that run to end, "
                             "or give another hydra.run.dir") from None
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')} {command}".rstrip().encode())
    _held[folder] = descriptor


def release(folder: Path | str) -> None:
    descriptor = _held.pop(Path(folder).resolve(), None)
    if descriptor is not None:
        os.close(descriptor)  # closing drops the flock


def busy(folder: Path) -> str | None:
    """Who holds ``folder``'s lock, when a live process other than this one does; else None."""
    lock = Path(folder) / LOCK
    if Path(folder).resolve() in _held or not lock.is_file():
        return None
    descriptor = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(lock)
    finally:
        os.close(descriptor)
    return None


def remove_if_unused(folder: Path) -> None:
    """A run that stopped before writing anything of its own leaves no folder holding only Hydra's files."""
    folder = Path(folder)
    if folder.is_dir() and all(p.name in HYDRA_FILES for p in folder.iterdir()):
        release(folder)
        shutil.rmtree(folder, ignore_errors=True)


def _overrides(argv: list[str]) -> dict[str, str]:
    """``key=value`` arguments of the command line (the last of each key wins), without + / ~ prefixes."""
    found = {}
    for argument in argv:
        if "=" in argument and not argument.startswith("-"):
            key, value = argument.split("=", 1)
            found[key.lstrip("+~")] = value.strip("'\"")
    return found


def before_hydra(argv: list[str]) -> list[str]:
    """Check and claim the run folder a command line names, before Hydra writes into it; returns the
    arguments to hand Hydra (a resume gets ``hydra.run.dir=<its run_dir>``). Multirun sweeps are left to
    ``claim`` in each job (their folders are new)."""
    overrides = _overrides(argv)
    if overrides.get("hydra/launcher", "basic") == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError("hydra/launcher=slurm: no Slurm here (no sbatch on PATH); run where Slurm is, or use "
                          "hydra/launcher=joblib (local, in parallel) or basic")
    if any(a in ("-m", "--multirun") for a in argv) or not is_first_process():
        return argv
    mode, run_dir, folder = overrides.get("mode", "train"), overrides.get("run_dir"), overrides.get("hydra.run.dir")
    if mode == "train" and run_dir not in (None, "null"):
        if not Path(run_dir).is_dir():
            raise ConfigError(f"run_dir={run_dir}: no such run folder; pass the folder of the run to resume")
        if folder is None:  # the resume writes its own folder: Hydra's record of the run stays the run's
            argv = [*argv, f"hydra.run.dir={run_dir}", "hydra.output_subdir=null"]
        folder = run_dir  # the folder the resume writes (Hydra's log goes to hydra.run.dir when one is given)
    if folder is not None:
        holder = busy(Path(folder))
        if holder is not None:
            raise RunFolderError(f"{folder} is in use by {holder}; wait for that run to end, or give another "
                                 "hydra.run.dir")
    if not (mode == "train" and run_dir not in (None, "null")) and folder is not None and holds_checkpoints(Path(folder)):
        raise RunFolderError(f"{folder} holds another run's checkpoints: resume it with mode=train run_dir={folder} "
                             "ckpt=last, test it with mode=test run_dir=…, or give a new hydra.run.dir")
    if folder is not None:
        claim(folder, " ".join(["python -m vae_lab", *argv]))  # made now if new, so no second run slips in
    return argv

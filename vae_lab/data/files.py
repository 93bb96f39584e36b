"""Small file helpers shared by the datamodules: cache folders, checksums, atomic writes."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def default_data_dir() -> str:
    """The data cache: $VAE_LAB_DATA_DIR, else $XDG_CACHE_HOME/vae_lab, else ~/.cache/vae_lab."""
    if os.environ.get("VAE_LAB_DATA_DIR"):
        return os.environ["VAE_LAB_DATA_DIR"]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "vae_lab")


def md5_of_text(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def md5_of_file(path: Path) -> str:
    """md5 of a file's bytes (the UTF-8 text it holds: equal to ``md5_of_text`` of what was written)."""
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def run_id() -> str:
    """A suffix that keeps run folders of the same second apart: milliseconds and the process id."""
    import time

    return f"{int(time.time() * 1000) % 1000:03d}-{os.getpid()}"


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a file through a temporary sibling and a rename, so no reader sees half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if mode == "wb" else {"encoding": "utf-8"})) as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a written output gets the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def installed_package_file(package: str, relative: str, install_hint: str) -> Path:
    """Path of a data file inside an installed package, located without importing the package.

    Some data-only packages must not be imported (their module name collides with another package,
    or their source warns on import); ``importlib.util.find_spec`` finds them without running them.
    """
    import importlib.util

    from vae_lab.errors import ConfigError

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the data package '{package}' is not installed: {install_hint}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise ConfigError(f"no file {relative} in the installed package '{package}': {install_hint}")
    return path

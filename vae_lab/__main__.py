"""``python -m vae_lab [overrides]``: compose conf/train.yaml and run.

Every failure the user can act on ends as one line, ``error: …``, on stderr, with exit code 2 (130 / 143
for Ctrl-C / SIGTERM, after saving ``last.ckpt``), and no half-written run folder: the project's own
errors (vae_lab/errors.py), Hydra's (an unknown group option or key, with the nearest valid names:
vae_lab/cli_errors.py) and the operating system's (a run folder that cannot be made, a full disk).
``HYDRA_FULL_ERROR=1`` shows Hydra's full error and traceback instead.
"""
import logging
import os
import sys
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig

from vae_lab.cli_errors import one_line
from vae_lab.errors import UserError
from vae_lab.run_folder import before_hydra, remove_if_unused
from vae_lab.train import run


def user_error(error: BaseException) -> UserError | None:
    """The project's one-line error behind ``error``, however instantiate or Lightning wrapped it."""
    cause = error
    while cause is not None and not isinstance(cause, UserError):
        cause = cause.__cause__ or cause.__context__
    return cause


def quiet_libraries() -> None:
    """Stderr is for what the user must act on. Lightning's and Fabric's own stderr handlers give way to
    Hydra's logging (stdout and the run's ``__main__.log``); wandb speaks only when ``WANDB_SILENT=false``
    (the run's folder is logged); two warnings about the libraries' internals, not about the run, are
    dropped."""
    for name in ("pytorch_lightning", "lightning_fabric"):
        library = logging.getLogger(name)
        for handler in list(library.handlers):
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                library.removeHandler(handler)
        library.propagate = True
    os.environ.setdefault("WANDB_SILENT", "true")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", message=r"You have overridden `transfer_batch_to_device`")


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    quiet_libraries()
    try:
        return run(cfg)
    except Exception as error:
        cause = user_error(error)
        if cause is None:
            raise
        remove_if_unused(Path(cfg.paths.output_dir))
        stop(str(cause), cause.exit_code)


def stop(message: str, code: int) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def cli() -> None:
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its errors to us, and we tell them in one line
    try:
        sys.argv = [sys.argv[0], *before_hydra(sys.argv[1:])]
        main()
    except SystemExit:
        raise
    except Exception as error:  # noqa: BLE001  (Hydra's composition errors, the OS's)
        if full_error:
            raise
        cause = user_error(error)
        if cause is not None:
            stop(str(cause), cause.exit_code)
        message = one_line(error, sys.argv[1:])
        if message is None:
            raise
        stop(message, 2)


if __name__ == "__main__":
    cli()

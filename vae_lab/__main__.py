"""``python -m vae_lab [overrides]``: compose conf/train.yaml and run."""
import shutil
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from vae_lab.errors import ConfigError
from vae_lab.module import NonFiniteLossError
from vae_lab.train import run

USER_ERRORS = (ConfigError, NonFiniteLossError)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        return run(cfg)
    except Exception as error:  # one line for a user's mistake, whether or not instantiate or Lightning wrapped it
        cause = error
        while cause is not None and not isinstance(cause, USER_ERRORS):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        remove_if_empty(Path(cfg.paths.output_dir))
        sys.exit(2)


def remove_if_empty(folder: Path) -> None:
    """A run that stopped on a user error leaves no folder holding only Hydra's own files."""
    if folder.is_dir() and all(p.name in (".hydra", "__main__.log") for p in folder.iterdir()):
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

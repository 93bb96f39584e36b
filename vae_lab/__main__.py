"""``python -m vae_lab [overrides]``: compose conf/train.yaml and run."""
import sys

import hydra
from omegaconf import DictConfig

from vae_lab.errors import ConfigError
from vae_lab.train import run


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        return run(cfg)
    except Exception as error:  # one line for a user's mistake, whether or not instantiate wrapped it
        cause = error
        while cause is not None and not isinstance(cause, ConfigError):
            cause = cause.__cause__
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

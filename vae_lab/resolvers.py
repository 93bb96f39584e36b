"""The OmegaConf resolvers the configs use, registered once on import (``vae_lab.train`` imports this):
``${vae_lab_data_dir:}`` the data cache, ``${vae_lab_run_id:}`` a run folder's unique suffix,
``${vae_lab_fraction:total,share}`` a schedule length as a share of the run, ``${vae_lab_beta:…}`` the
published smoothing sharpness of a discrete VAE."""
from __future__ import annotations

from omegaconf import OmegaConf

from vae_lab.data.files import default_data_dir, run_id
from vae_lab.errors import ConfigError
from vae_lab.published import published_beta


def fraction_of_steps(total: int, fraction: float) -> int:
    """``${vae_lab_fraction:${trainer.max_steps},0.3}``: a schedule length as a share of the run."""
    if total is None or total <= 0:
        raise ConfigError(f"trainer.max_steps={total}: this schedule is a fraction of the run; set trainer.max_steps")
    return max(1, int(total * fraction))


def register() -> None:
    OmegaConf.register_new_resolver("vae_lab_data_dir", default_data_dir, replace=True)
    OmegaConf.register_new_resolver("vae_lab_run_id", run_id, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("vae_lab_fraction", fraction_of_steps, replace=True)
    OmegaConf.register_new_resolver("vae_lab_beta", published_beta, replace=True)


register()

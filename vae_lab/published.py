"""Published settings of the discrete VAEs that depend on the model, the structure and the dataset:
the smoothing sharpness β of Vahdat et al.'s DVAE# reference code (run.py, ``get_config``), used
when ``beta=null``. (For dvaepp_power / dvaes_power the power function's λ is 1/β; for dvaes_gauss
σ = β^-1/2; for dvaes_gi β is the floor of the Gaussian integral's λ.)"""
from __future__ import annotations

from vae_lab.errors import ConfigError

_MODELS = ("dvae_spike_exp", "dvaepp_exp", "dvaepp_power", "dvaes_gi", "dvaes_gauss", "dvaes_exp",
           "dvaes_unexp", "dvaes_power")
_TABLE = {  # (dataset, struct) -> β for each model, in the order of _MODELS
    ("mnist", "1-layer-lin"): (5, 12, 40, 40, 40, 12, 40, 40),
    ("mnist", "1-layer-nonlin"): (5, 14, 30, 30, 30, 12, 30, 40),
    ("mnist", "2-layer-nonlin"): (4, 10, 30, 30, 25, 10, 16, 30),
    ("omniglot", "1-layer-lin"): (4, 14, 40, 40, 40, 12, 40, 40),
    ("omniglot", "1-layer-nonlin"): (4, 12, 40, 30, 25, 10, 16, 30),
    ("omniglot", "2-layer-nonlin"): (4, 10, 30, 25, 25, 8, 16, 20),
}
for _source in ("mnist", "omniglot"):
    _TABLE[(_source, "4-layer-nonlin")] = _TABLE[(_source, "2-layer-nonlin")]


def published_beta(override: float | None, model: str, struct: str, source: str) -> float:
    """``override`` when given, else the reference's β for (model, struct, dataset source)."""
    if override is not None:
        if float(override) <= 0:
            raise ConfigError(f"beta={override}: the smoothing sharpness must be > 0 (null: the published value)")
        return float(override)
    try:
        return float(_TABLE[(source, struct)][_MODELS.index(model)])
    except (KeyError, ValueError):
        raise ConfigError(f"beta=null: no published value for model={model}, struct={struct}, dataset "
                          f"source {source}; pass beta=<sharpness>") from None

"""Published settings of the discrete VAEs that depend on the model, the structure and the dataset:
the smoothing sharpness β of Vahdat et al.'s DVAE# reference code (run.py, ``get_config``), used
when ``beta=null``. (For dvaepp_power / dvaes_power the power function's λ is 1/β; for dvaes_gauss
σ = β^-1/2; for dvaes_gi β is the floor of the Gaussian integral's λ.)"""
from __future__ import annotations

from vae_lab.errors import ConfigError

_TABLE = {  # (dataset source, struct) -> {model: β}
    ("mnist", "1-layer-lin"): {"dvae_spike_exp": 5, "dvaepp_exp": 12, "dvaepp_power": 40, "dvaes_gi": 40,
                               "dvaes_gauss": 40, "dvaes_exp": 12, "dvaes_unexp": 40, "dvaes_power": 40},
    ("mnist", "1-layer-nonlin"): {"dvae_spike_exp": 5, "dvaepp_exp": 14, "dvaepp_power": 30, "dvaes_gi": 30,
                                  "dvaes_gauss": 30, "dvaes_exp": 12, "dvaes_unexp": 30, "dvaes_power": 40},
    ("mnist", "2-layer-nonlin"): {"dvae_spike_exp": 4, "dvaepp_exp": 10, "dvaepp_power": 30, "dvaes_gi": 30,
                                  "dvaes_gauss": 25, "dvaes_exp": 10, "dvaes_unexp": 16, "dvaes_power": 30},
    ("omniglot", "1-layer-lin"): {"dvae_spike_exp": 4, "dvaepp_exp": 14, "dvaepp_power": 40, "dvaes_gi": 40,
                                  "dvaes_gauss": 40, "dvaes_exp": 12, "dvaes_unexp": 40, "dvaes_power": 40},
    ("omniglot", "1-layer-nonlin"): {"dvae_spike_exp": 4, "dvaepp_exp": 12, "dvaepp_power": 40, "dvaes_gi": 30,
                                     "dvaes_gauss": 25, "dvaes_exp": 10, "dvaes_unexp": 16, "dvaes_power": 30},
    ("omniglot", "2-layer-nonlin"): {"dvae_spike_exp": 4, "dvaepp_exp": 10, "dvaepp_power": 30, "dvaes_gi": 25,
                                     "dvaes_gauss": 25, "dvaes_exp": 8, "dvaes_unexp": 16, "dvaes_power": 20},
}
# the reference has no 4-layer-nonlin settings of its own: it takes the 2-layer-nonlin ones
for _source in ("mnist", "omniglot"):
    _TABLE[(_source, "4-layer-nonlin")] = _TABLE[(_source, "2-layer-nonlin")]


def published_beta(override: float | None, model: str, struct: str, source: str) -> float:
    """``override`` when given, else the reference's β for (model, struct, dataset source)."""
    if override is not None:
        if float(override) <= 0:
            raise ConfigError(f"beta={override}: the smoothing sharpness must be > 0 (null: the published value)")
        return float(override)
    try:
        return float(_TABLE[(source, struct)][model])
    except KeyError:
        raise ConfigError(f"beta=null: no published value for model={model}, struct={struct}, dataset "
                          f"source {source}; pass beta=<sharpness>") from None

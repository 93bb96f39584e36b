"""The posterior × prior × family matrix, generated from conf/posterior/ and conf/prior/ (a new prior or
posterior config joins it): every cell with a regulariser (vae_lab/regularisers.py) trains under a
minimal debug=fast and writes finite metrics (``test/nll`` with the AIS log Z under an RBM prior); every
other cell stops before anything is built with one line naming the pairs that work (through the CLI:
exit 2 and no run folder)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CONF_DIR
from tests.discovery import family_representatives
from vae_lab.errors import ConfigError
from vae_lab.regularisers import REGULARISERS
from vae_lab.train import run, validate
from vae_lab.validation import check_parts

POSTERIORS = sorted(p.stem for p in Path(CONF_DIR, "posterior").glob("*.yaml"))
PRIORS = sorted(p.stem for p in Path(CONF_DIR, "prior").glob("*.yaml"))
# one model of each family (its Gaussian baseline), on the data it reads (tests/discovery.py)
FAMILIES = {family.rsplit(".", 1)[-1]: [f"model={model}", f"dataset={dataset}"]
            for family, (model, dataset) in family_representatives().items()}
MINIMAL = ["debug=fast", "eval.text_metrics=false", "dataset.limit=24", "dataset.batch_size=8", "dataset.eval_batch_size=24",
           "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
           "+trainer.num_sanity_val_steps=0", "eval.val_samples=2", "eval.test_samples=2", "eval.chunk_size=2",
           "eval.num_samples=1", "eval.log_z.num_chains=16", "eval.log_z.num_temperatures=10",
           "callbacks.model_checkpoint=null"]
# the smallest settings of a part (a part not named runs at its defaults); the text families' 8 latents
# split into variables of 4 classes, positions of 4-dimensional codes
PRIOR_SIZES = {"mixture": ["prior.components=4"], "aggregate": ["prior.components=8"], "vamp": ["prior.components=4"],
               "rbm": ["sampler=pcd", "sampler.num_chains=8", "sampler.num_sweeps=1"]}
POSTERIOR_SIZES = {"categorical": ["posterior.classes=4"], "vq": ["posterior.code_dim=4", "posterior.codebook_size=8"]}
# the pairs that have a regulariser: posterior -> the priors it pairs with (the specification the table meets)
PAIRS = {"gaussian": {"normal", "mixture", "aggregate", "vamp"}, "bernoulli": {"rbm"},
         "categorical": {"categorical"}, "vq": {"codes"}}


def cell(make_config, family: str, posterior: str, prior: str, *extra: str):
    sizes = [*PRIOR_SIZES.get(prior, []), *POSTERIOR_SIZES.get(posterior, [])]
    return make_config([*FAMILIES[family], *MINIMAL, f"posterior={posterior}", f"prior={prior}", *sizes, *extra],
                       name=f"{family}-{posterior}-{prior}")


def valid(cfg) -> bool:
    try:
        check_parts(cfg)
    except ConfigError:
        return False
    return True


CELLS = [(f, q, p) for f in FAMILIES for q in POSTERIORS for p in PRIORS]


def assert_trained(cfg, prior: str) -> dict:
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    for key in ("train/elbo", "train/kl", "val/nll", "test/nll", "test/elbo", "test/kl"):
        assert math.isfinite(metrics[key]), key
    if prior == "rbm":  # the NLL under the discrete RBM with its AIS log Z
        assert math.isfinite(metrics["test/log_z"]) and metrics["test/log_z_std_err"] >= 0
    return metrics


@pytest.mark.parametrize("family,posterior,prior", CELLS)
def test_each_cell_trains_or_stops_with_one_line(make_config, family, posterior, prior):
    cfg = cell(make_config, family, posterior, prior)
    paired = prior in PAIRS.get(posterior, set())
    encodes_inputs = family == "ImageVAE"  # the family that encodes a prior's pseudo-inputs
    assert valid(cfg) == (paired and (prior != "vamp" or encodes_inputs))
    if not paired:
        with pytest.raises(ConfigError, match=r"no regulariser; the pairs that work: .*posterior=bernoulli with "
                                              r"prior=rbm.*posterior=gaussian with prior=aggregate\|mixture\|normal\|vamp"):
            validate(cfg)
        assert not Path(cfg.paths.output_dir).exists()
        return
    if not valid(cfg):  # the VampPrior with a family that cannot encode its pseudo-inputs
        with pytest.raises(ConfigError, match=r"^prior=vamp needs the model to give encode_inputs, input_shape"):
            validate(cfg)
        return
    if prior == "vamp":  # the image baseline's default struct has two groups: one line at build time
        with pytest.raises(ConfigError, match="needs a one-group posterior"):
            run(cfg)
        cfg = cell(make_config, family, posterior, prior, "struct=1-layer-nonlin")
    run(cfg)
    assert_trained(cfg, prior)


@pytest.mark.parametrize("sampler,bound", [("pcd", "iw"), ("population_annealing", "elbo"),
                                           ("population_annealing", "iw")])
def test_the_sentence_vae_with_bernoulli_latents_under_an_rbm(make_config, sampler, bound):
    """Both samplers, the ELBO and the IW bound (k = 2: the DVAE# relaxed prior); pcd × elbo is a matrix cell."""
    sizes = {"pcd": ["sampler.num_chains=8", "sampler.num_sweeps=1"],
             "population_annealing": ["sampler.num_chains=8", "sampler.num_temperatures=3"]}[sampler]
    cfg = make_config([*FAMILIES["SentenceVAE"], *MINIMAL, "posterior=bernoulli", "prior=rbm", f"sampler={sampler}",
                       *sizes, f"objective.bound={bound}", "k=2"])
    run(cfg)
    metrics = assert_trained(cfg, "rbm")
    assert metrics["train/bound"] >= metrics["train/elbo"] - 1e-6  # the IW bound of the same draws


def test_the_spike_has_no_iw_regulariser(make_config):
    ok = cell(make_config, "ImageVAE", "bernoulli", "rbm", "posterior/relaxation=spike_exp")
    assert valid(ok)
    with pytest.raises(ConfigError, match="posterior/relaxation=spike_exp with prior=rbm and objective.bound=iw"):
        check_parts(cell(make_config, "ImageVAE", "bernoulli", "rbm", "posterior/relaxation=spike_exp",
                         "objective.bound=iw"))


def test_every_table_pair_is_reachable_from_the_configs():
    """Each (posterior row, prior support) of the table is some cell of conf/ (no dead rows)."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    supports = {get_class(OmegaConf.load(Path(CONF_DIR, "prior", f"{p}.yaml"))._target_).support for p in PRIORS}
    relaxations = Path(CONF_DIR, "posterior", "relaxation").glob("*.yaml")
    families = {get_class(OmegaConf.load(p)._target_).family for p in relaxations}
    rows = {"gaussian", "categorical", "vq"} | {f"bernoulli/{family}" for family in families}
    assert set(REGULARISERS) <= {(row, support) for row in rows for support in supports}


def test_an_invalid_pair_through_the_cli_exits_2_with_one_line_and_no_folder(tmp_path):
    folder = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "vae_lab", "model=dvaes_power", "prior=normal", "debug=fast",
                             "logger=none", f"hydra.run.dir={folder}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: posterior=bernoulli posterior/relaxation=power with prior=normal")
    assert "posterior=gaussian with prior=aggregate|mixture|normal" in lines[0]
    assert not folder.exists()

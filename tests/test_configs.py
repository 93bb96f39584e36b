"""Every config composes and instantiates; published settings are what they say."""
from pathlib import Path

import pytest
from hydra.utils import instantiate

from tests.conftest import CONF_DIR
from vae_lab.errors import ConfigError
from vae_lab.train import build_datamodule, build_loggers, build_module, validate


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize("annealing", options("annealing"))
def test_annealing_configs(make_config, annealing):
    schedule = instantiate(make_config([f"annealing={annealing}", "trainer.max_steps=1000"]).annealing)
    assert 0.0 <= schedule(0) <= schedule(10**6) <= 1.0


@pytest.mark.parametrize("logger", options("logger"))
def test_logger_configs(make_config, logger):
    cfg = make_config([f"logger={logger}"])
    loggers = build_loggers(cfg)
    assert len(loggers) == (0 if logger == "none" else 1)


@pytest.mark.parametrize("trainer", options("trainer"))
def test_trainer_configs_compose(make_config, trainer):
    cfg = make_config([f"trainer={trainer}"])
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer"
    if trainer == "cpu":
        instantiate(cfg.trainer, logger=False)


def test_debug_fast_shrinks_each_family_without_adding_keys(make_config):
    """debug=fast's model sizes come from conf/debug_model/fast_<model>.yaml: the text nets shrink, and
    an image model gets no key it does not take."""
    assert make_config(["debug=fast"]).model.hidden_dim == 32
    assert make_config(["debug=fast", "model=cvae", "dataset=verb_tense"]).model.latent_dim == 8
    image = make_config(["debug=fast", "model=dvaes_exp"])
    assert "hidden_dim" not in image.model and "embedding_dim" not in image.model
    assert image.dataset.limit == 200 and image.sampler.num_chains == 100


def test_image_models_take_the_published_settings(make_config):
    cfg = make_config(["model=dvaes_power", "struct=1-layer-nonlin"])
    assert cfg.dataset.reader.name == "mnist" and cfg.prior._target_.endswith("RBMPrior")
    assert cfg.sampler._target_.endswith("PopulationAnnealing") and cfg.sampler.num_chains == 1000
    assert (cfg.optimizer.lr, cfg.optimizer.eps, cfg.dataset.batch_size, cfg.objective.bound) == (3e-3, 1e-3, 100, "iw")
    assert cfg.posterior.relaxation.smoothing.beta == 40.0 and "beta" not in cfg.model  # run.py: 1-layer-nonlin, MNIST
    assert make_config(["model=dvaepp_exp", "struct=2-layer-nonlin"]).posterior.relaxation.smoothing.beta == 10.0
    assert make_config(["model=dvaepp_exp", "beta=7"]).posterior.relaxation.smoothing.beta == 7.0
    assert make_config(["model=dvae_spike_exp", "struct=2-layer-nonlin", "dataset=omniglot"]).posterior.relaxation.beta == 4.0
    assert make_config(["model=dvaes_gi", "struct=1-layer-lin"]).posterior.relaxation.minimum_lambda == 40.0
    assert make_config(["model=vae_mlp", "posterior=bernoulli", "prior=rbm"]).posterior.relaxation.smoothing.beta == 8.0
    warmup = instantiate(cfg.annealing)
    assert warmup(0) == 0.0 and warmup(15000) == 0.5 and warmup(30000) == 1.0  # 30% of 100,000 steps
    lr = instantiate(cfg.lr_scheduler.lr_lambda)
    assert [lr(s) for s in (0, 2000, 59999, 60000, 75000, 95000)] == [0.1, 1.0, 1.0, 0.3333333, 0.1, 0.030303]


def test_a_sampler_with_a_gaussian_prior_is_reported_unused(make_config, caplog):
    cfg = make_config(["debug=fast", "sampler=pcd"])
    build_module(cfg, build_datamodule(cfg))
    assert "sampler=PCD is unused" in caplog.text


def test_bowman_experiment(make_config):
    cfg = make_config(["experiment=bowman2016_ptb"])
    assert (cfg.model.rnn_type, cfg.model.embedding_dim, cfg.model.hidden_dim, cfg.model.latent_dim) == ("lstm", 350, 200, 13)
    assert (cfg.optimizer.lr, cfg.dataset.batch_size, cfg.model.word_dropout) == (2e-4, 64, 0.25)
    assert instantiate(cfg.annealing)(60000) == 0.5


def test_text_files_needs_a_path(make_config):
    cfg = make_config(["dataset=text_files"])
    with pytest.raises(ConfigError, match="dataset.path"):
        build_datamodule(cfg)


@pytest.mark.parametrize("override,key", [("mode=fit", "mode=fit"), ("k=0", "k=0"),
                                          ("eval.test_samples=0", "eval.test_samples"),
                                          ("torch_threads=0", "torch_threads")])
def test_validate_names_the_key(make_config, override, key):
    with pytest.raises(ConfigError, match=key):
        validate(make_config([override]))

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
    schedule = instantiate(make_config([f"annealing={annealing}"]).annealing)
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


def text_options():
    return [d for d in options("dataset") if d in ("ptb", "text_files")]


FAMILY_DATASET = {"vae": "ptb", "cvae": "verb_tense"}


@pytest.mark.parametrize("model", options("model"))
def test_every_model_config_instantiates_under_debug_fast(make_config, model):
    """debug=fast's shared keys (model sizes, dataset.limit) fit every family."""
    cfg = make_config([f"model={model}", f"dataset={FAMILY_DATASET[model]}", "debug=fast"])
    assert cfg.model.hidden_dim == 32 and cfg.dataset.limit == 200
    module = build_module(cfg, build_datamodule(cfg))
    assert sum(p.numel() for p in module.parameters()) > 0


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

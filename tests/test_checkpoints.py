"""Configs stored in checkpoints: targets that moved since a checkpoint was written still build."""
from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import OmegaConf

from vae_lab.checkpoints import config_from_checkpoint
from vae_lab.schedules import Linear


def test_a_checkpoint_naming_the_old_schedule_module_restores():
    saved = {"model": {"_target_": "vae_lab.models.cvae.TenseCVAE", "teacher_forcing": {
                 "_target_": "vae_lab.annealing.Linear", "steps": 10, "start": 1.0, "end": 0.0}},
             "dataset": {"_target_": "vae_lab.data.verb_tense.VerbTenseDataModule"}}
    cfg = config_from_checkpoint(OmegaConf.create({"dataset": {"path": None}}), {"vae_lab_config": saved})
    assert cfg.model.teacher_forcing._target_ == "vae_lab.schedules.Linear"
    schedule = instantiate(cfg.model.teacher_forcing)
    assert isinstance(schedule, Linear) and schedule(10) == 0.0


def test_an_image_checkpoint_from_before_the_posterior_group_restores_its_posterior():
    """``model.kl_term`` / ``model.relaxation`` become the posterior they meant; the Gaussian integral's
    scales move from ``sigma_raw`` to ``posterior.sigma_raw``."""
    from functools import partial

    import torch

    from vae_lab.priors.rbm_prior import RBMPrior
    from vae_lab.priors.samplers import PCD

    relaxation = {"_target_": "vae_lab.posteriors.smoothing.GaussianMixtureRelaxation", "delta_mu_scale": 0.5}
    struct = {"name": "tiny", "num_groups": 1, "group_size": 4, "hidden_layers": 1, "hidden_units": 4}
    saved = {"model": {"_target_": "vae_lab.models.image_vae.ImageVAE", "name": "dvaes_gi", "struct": struct,
                       "kl_term": "gaussian_integral", "relaxation": relaxation, "beta": 30.0},
             "dataset": {"_target_": "vae_lab.data.images.ImageDataModule"}}
    cfg = config_from_checkpoint(OmegaConf.create({"dataset": {"path": None}}), {"vae_lab_config": saved})
    assert "kl_term" not in cfg.model and "relaxation" not in cfg.model
    assert cfg.posterior._target_ == "vae_lab.posteriors.bernoulli.BernoulliPosterior"
    assert cfg.posterior.relaxation.minimum_lambda == 30.0
    prior = partial(RBMPrior, sampler=partial(PCD, num_chains=4, num_sweeps=1))
    build = partial(instantiate(cfg.model, _partial_=True), num_pixels=4, image_shape=(2, 2),
                    pixel_mean=torch.full((4,), 0.5), prior=prior, bound="iw")
    model = build(posterior=instantiate(cfg.posterior))
    old_names = {"posterior.sigma_raw": "sigma_raw"}  # where the scales were
    state = {old_names.get(key, key): value for key, value in model.state_dict().items()}
    state["sigma_raw"] = torch.full((4,), 2.0)
    model.load_state_dict(state)
    assert torch.equal(model.posterior.sigma_raw.detach(), torch.full((4,), 2.0))
    text = {"model": {"_target_": "vae_lab.models.sentence_vae.SentenceVAE"}, "dataset": {"_target_": "vae_lab.data.text.TextDataModule"}}
    assert config_from_checkpoint(OmegaConf.create({"dataset": {}}), {"vae_lab_config": text}).posterior._target_ \
        == "vae_lab.posteriors.gaussian.GaussianPosterior"

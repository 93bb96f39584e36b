"""The VampPrior (vae_lab/priors/vamp.py, conf/prior/vamp.yaml) on a tiny one-group image VAE with a Gaussian
posterior, against independent ground truth:

- log_prob(z) against ``torch.distributions.MixtureSameFamily(Categorical(uniform K),
  Independent(Normal(μ_k, σ_k), 1))`` whose μ_k, σ_k are computed in the test from the encoder in eval mode
  (its batch norm on its running statistics, as the module docstring and ``ImageVAE.encode_inputs`` say) at
  hardtanh(raw pseudo-inputs, 0, 1) - pixel mean, in training mode as in evaluation;
- the docstring's claim that the pseudo-inputs never enter the data's batch statistics: evaluating the prior in
  training mode leaves every batch-norm running statistic unchanged and every module's train/eval flag as it was —
  the encoder's, and the BN-VAE batch norm on the posterior's means (``posterior.batch_norm_scale``);
- the pseudo-inputs are learned parameters of the model: they get non-zero gradients from log_prob, lie in [0, 1];
- draws: with one component, their mean and variance against the component's (Monte Carlo tolerance);
- the config: prior=vamp builds it with ``components`` and the pseudo-inputs in the model's input shape.
"""
from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from vae_lab.instantiators import built
from vae_lab.models.image_vae import ImageVAE
from vae_lab.posteriors.gaussian import GaussianPosterior
from vae_lab.priors.vamp import VampPrior

PIXELS, LATENTS, COMPONENTS = 6, 4, 3


def tiny_model(components: int = COMPONENTS, batch_norm_scale: float | None = None, seed: int = 0) -> ImageVAE:
    torch.manual_seed(seed)
    model = ImageVAE(num_pixels=PIXELS, image_shape=(2, 3), pixel_mean=torch.linspace(0.2, 0.5, PIXELS),
                     prior=partial(VampPrior, components=components, init_mean=0.5, init_std=0.2, seed=seed),
                     posterior=partial(GaussianPosterior, batch_norm_scale=batch_norm_scale),
                     struct={"num_groups": 1, "group_size": LATENTS, "hidden_layers": 1, "hidden_units": 5})
    # a few training passes, so the running statistics differ from the batch statistics and from their start
    pixels = (torch.rand(8, PIXELS, generator=torch.Generator().manual_seed(seed + 1)) < 0.4).float()
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model.log_weights({"pixels": pixels})
    return model


def reference_mixture(model: ImageVAE) -> MixtureSameFamily:
    """The mixture of the encoder's posteriors at the pseudo-inputs, built here from the nets in eval mode."""
    encoder = model.encoders[0]
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        u = F.hardtanh(model.prior.raw_inputs, 0.0, 1.0)
        out = encoder(u - model.pixel_mean).double()  # [K, 2 · latents]: means, then log-variances
    encoder.train(was_training)
    mean, log_var = out[:, :LATENTS], out[:, LATENTS:]
    k = mean.shape[0]
    return MixtureSameFamily(Categorical(logits=torch.zeros(k, dtype=torch.float64)),
                             Independent(Normal(mean, (0.5 * log_var).exp()), 1))


def running_statistics(model) -> list[torch.Tensor]:
    return [t.clone() for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
            for t in (m.running_mean, m.running_var, m.num_batches_tracked)]


def flags(model) -> list[bool]:
    return [m.training for m in model.modules()]


@pytest.mark.parametrize("training", [True, False])
def test_log_prob_is_the_mixture_of_the_encoder_posteriors_at_the_pseudo_inputs(training):
    model = tiny_model()
    model.train(training)
    z = torch.randn(2, 5, LATENTS, generator=torch.Generator().manual_seed(2))
    ours = model.prior.log_prob(z)
    assert ours.shape == (2, 5)
    reference = reference_mixture(model).log_prob(z.double())
    torch.testing.assert_close(ours.double(), reference, rtol=1e-5, atol=1e-5)
    # far from every component too (the mixture's log-sum-exp, not a sum of densities)
    far = 6.0 + torch.randn(3, LATENTS, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(model.prior.log_prob(far).double(), reference_mixture(model).log_prob(far.double()),
                               rtol=1e-5, atol=1e-4)


def test_one_component_is_the_posterior_at_its_pseudo_input():
    model = tiny_model(components=1)
    params = model.prior.components()
    z = torch.randn(4, LATENTS, generator=torch.Generator().manual_seed(4))
    mean, log_var = params.mean[0].double(), params.log_var[0].double()
    direct = Independent(Normal(mean, (0.5 * log_var).exp()), 1).log_prob(z.double())
    torch.testing.assert_close(model.prior.log_prob(z).double(), direct, rtol=1e-5, atol=1e-5)
    draws = model.prior.sample(20000, generator=torch.Generator().manual_seed(5))
    assert draws.shape == (20000, LATENTS)
    std = (0.5 * params.log_var[0]).exp().detach()
    assert ((draws.mean(0) - params.mean[0].detach()).abs() < 5 * std / math.sqrt(20000)).all()
    assert ((draws.std(0) / std - 1).abs() < 0.05).all()


def test_evaluating_the_prior_leaves_the_encoder_batch_norm_and_modes_alone():
    model = tiny_model()
    for training in (True, False):
        model.train(training)
        before, modes = running_statistics(model), flags(model)
        model.prior.log_prob(torch.randn(7, LATENTS)).sum().backward()
        model.prior.sample(3)
        after = running_statistics(model)
        assert len(before) == 6 and all(torch.equal(a, b) for a, b in zip(before, after))
        assert flags(model) == modes


def test_evaluating_the_prior_leaves_the_posterior_batch_norm_alone():
    model = tiny_model(batch_norm_scale=0.6)
    model.train()
    before = running_statistics(model)
    assert len(before) == 9  # the encoder's, the decoder's and the posterior's
    model.prior.log_prob(torch.randn(7, LATENTS))
    after = running_statistics(model)
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_pseudo_inputs_are_learned_parameters_in_the_data_range():
    model = tiny_model()
    prior = model.prior
    assert isinstance(prior.raw_inputs, torch.nn.Parameter) and prior.raw_inputs.shape == (COMPONENTS, PIXELS)
    assert any(p is prior.raw_inputs for p in model.parameters())
    assert "prior.raw_inputs" in model.state_dict()
    u = prior.pseudo_inputs()
    assert u.min() >= 0 and u.max() <= 1
    model.zero_grad()
    prior.log_prob(torch.randn(6, LATENTS, generator=torch.Generator().manual_seed(6))).sum().backward()
    assert prior.raw_inputs.grad is not None and (prior.raw_inputs.grad.abs().sum(-1) > 0).all()  # every component
    assert model.encoders[0].output.weight.grad.abs().sum() > 0


def test_the_config_builds_it_on_the_image_family(make_config):
    cfg = make_config(["model=vae_mlp", "struct=1-layer-nonlin", "prior=vamp", "prior.components=3",
                       "model.struct.group_size=4", "model.struct.hidden_units=5", "model.struct.hidden_layers=1"])
    assert cfg.prior._target_ == "vae_lab.priors.vamp.VampPrior"
    model = built(cfg.model, prior=built(cfg.prior), posterior=built(cfg.posterior), bound=cfg.objective.bound,
                  num_pixels=PIXELS, image_shape=(2, 3), pixel_mean=torch.full((PIXELS,), 0.3))
    assert isinstance(model.prior, VampPrior) and model.prior.num_components == 3
    assert model.prior.raw_inputs.shape == (3, PIXELS)
    assert model.prior.requires <= model.offers
    z = torch.randn(2, 4)
    torch.testing.assert_close(model.prior.log_prob(z).double(), reference_mixture(model).log_prob(z.double()),
                               rtol=1e-5, atol=1e-5)

"""Continuous priors: the learned Gaussian mixture against torch.distributions."""
import math

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from vae_lab.errors import ConfigError
from vae_lab.densities import diagonal_mixture_log_prob, standard_normal_log_prob
from vae_lab.priors.mixture import AggregatePosteriorPrior, MixturePrior, StandardNormalPrior


def test_mixture_log_prob_equals_torch_distributions():
    torch.manual_seed(0)
    prior = MixturePrior(latent_dim=3, components=5, min_scale=0.05)
    with torch.no_grad():
        prior.raw_scales.normal_()
        prior.logits.normal_()
    reference = MixtureSameFamily(Categorical(logits=prior.logits), Independent(Normal(prior.means, prior.scales), 1))
    z = torch.randn(4, 7, 3)
    assert prior.log_prob(z).shape == (4, 7)
    assert torch.allclose(prior.log_prob(z), reference.log_prob(z), atol=1e-5)
    assert (prior.scales >= 0.05).all()


def test_mixture_samples_follow_its_components():
    prior = MixturePrior(latent_dim=2, components=2, min_scale=1e-3)
    with torch.no_grad():
        prior.means.copy_(torch.tensor([[-5.0, 0.0], [5.0, 0.0]]))
        prior.raw_scales.fill_(-20.0)  # scales at their floor
        prior.logits.copy_(torch.tensor([0.0, 2.0]))
    z = prior.sample(4000, torch.Generator().manual_seed(0))
    share = (z[:, 0] > 0).float().mean().item()
    assert abs(share - torch.tensor([0.0, 2.0]).softmax(0)[1].item()) < 0.03
    assert torch.allclose(z[:, 1], torch.zeros(4000), atol=0.01)


def test_standard_normal_prior():
    prior = StandardNormalPrior(4)
    assert prior.analytic_kl and prior.is_standard_normal
    z = prior.sample(6, torch.Generator().manual_seed(0))
    assert torch.equal(prior.log_prob(z), standard_normal_log_prob(z))
    with pytest.raises(ConfigError, match="prior.components"):
        MixturePrior(4, components=0)


def test_aggregate_posterior_prior_is_the_mixture_of_its_posteriors():
    prior = AggregatePosteriorPrior(latent_dim=3, components=4).eval()
    z = torch.randn(5, 3)
    assert prior.analytic_kl and torch.equal(prior.log_prob(z), standard_normal_log_prob(z))  # unfitted
    means, log_vars = torch.randn(4, 3), torch.randn(4, 3) * 0.3
    prior.fit(means, log_vars)
    assert not prior.analytic_kl
    prior.train()  # the training stage: N(0, I), fitted or not
    assert prior.analytic_kl and torch.equal(prior.log_prob(z), standard_normal_log_prob(z))
    prior.eval()
    reference = MixtureSameFamily(Categorical(logits=torch.zeros(4)),
                                  Independent(Normal(means, (0.5 * log_vars).exp()), 1))
    assert torch.allclose(prior.log_prob(z), reference.log_prob(z), atol=1e-5)
    with pytest.raises(ValueError, match="fit"):
        prior.fit(means[:2], log_vars[:2])
    # its draws come from the components: far-apart tight posteriors are each hit uniformly
    prior.fit(torch.arange(4.0)[:, None].expand(4, 3) * 10, torch.full((4, 3), -12.0))
    draws = prior.sample(2000, torch.Generator().manual_seed(0))
    counts = torch.bincount(draws[:, 0].round().long() // 10, minlength=4)
    assert counts.sum() == 2000 and (counts - 500).abs().max() < 80
    # the components travel in the state dict
    copy = AggregatePosteriorPrior(latent_dim=3, components=4)
    copy.load_state_dict(prior.state_dict())
    assert bool(copy.fitted) and torch.equal(copy.means, prior.means)


def test_mixture_log_prob_stays_exact_for_tight_far_components():
    """The matmul expansion cancels terms of size m^2 / s^2; float64 keeps it exact."""
    torch.manual_seed(0)
    means, log_vars = 5.0 + torch.randn(6, 4), torch.full((6, 4), 2 * math.log(1e-3))
    z = means[:3] + 1e-3 * torch.randn(3, 4)
    reference = MixtureSameFamily(Categorical(logits=torch.zeros(6, dtype=torch.float64)),
                                  Independent(Normal(means.double(), (0.5 * log_vars.double()).exp()), 1))
    got = diagonal_mixture_log_prob(z, means, log_vars, torch.full((6,), -math.log(6)), chunk_size=2)
    assert torch.allclose(got.double(), reference.log_prob(z.double()), atol=1e-3)


def test_defensive_share_of_the_standard_normal():
    prior = AggregatePosteriorPrior(latent_dim=2, components=3, normal_weight=0.25).eval()
    prior.fit(torch.full((3, 2), 8.0), torch.full((3, 2), -10.0))
    z = torch.randn(50, 2)  # far from the tight components: only the N(0, I) share is left
    assert torch.allclose(prior.log_prob(z), standard_normal_log_prob(z) + math.log(0.25), atol=1e-4)
    near = torch.full((1, 2), 8.0)
    assert prior.log_prob(near) > standard_normal_log_prob(near)
    draws = prior.sample(4000, torch.Generator().manual_seed(0))
    assert abs((draws[:, 0] < 4).float().mean().item() - 0.25) < 0.03
    with pytest.raises(ConfigError, match=r"prior\.normal_weight"):
        AggregatePosteriorPrior(latent_dim=2, normal_weight=1.0)

import math

import pytest
import torch

from vae_lab.objectives import LogWeights, elbo, free_bits_kl, iw_bound, training_objective


def random_log_weights(k: int, batch: int = 6, dim: int = 4, seed: int = 0) -> LogWeights:
    g = torch.Generator().manual_seed(seed)
    mean, log_var = torch.randn(batch, dim, generator=g), torch.randn(batch, dim, generator=g) * 0.3
    z = mean + (0.5 * log_var).exp() * torch.randn(k, batch, dim, generator=g)
    from vae_lab.densities import standard_normal_log_prob
    from vae_lab.posteriors import GaussianPosterior

    return LogWeights(log_likelihood=-torch.rand(k, batch, generator=g) * 50, prior=standard_normal_log_prob(z),
                      posterior=GaussianPosterior.log_prob(z, mean, log_var),
                      kl_per_dim=GaussianPosterior.kl_per_dim(mean, log_var))


def test_elbo_equals_iw_bound_at_k1():
    lw = random_log_weights(k=1)
    torch.testing.assert_close(elbo(lw), iw_bound(lw))


def test_iw_bound_at_least_elbo_on_same_draws():
    lw = random_log_weights(k=20)
    assert torch.all(iw_bound(lw) >= elbo(lw) - 1e-6)
    assert torch.any(iw_bound(lw) > elbo(lw) + 1e-3)


def test_iw_bound_is_logmeanexp():
    lw = random_log_weights(k=5)
    expected = torch.log(lw.total.double().exp().mean(0)).float()
    torch.testing.assert_close(iw_bound(lw), expected, rtol=1e-5, atol=1e-4)


def test_training_loss_k1_beta1_is_negative_elbo_with_analytic_kl():
    lw = random_log_weights(k=1)
    out = training_objective(lw, kl_weight=1.0)
    expected = -(lw.log_likelihood[0] - lw.kl_per_dim.sum(-1)).mean()
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.kl, lw.kl_per_dim.sum(-1))


def test_kl_weight_scales_only_the_regulariser():
    lw = random_log_weights(k=1)
    loss0 = training_objective(lw, kl_weight=0.0).loss
    torch.testing.assert_close(loss0, -lw.log_likelihood.mean())


def test_training_loss_iw_with_k_gt_1_beta1_is_negative_iw_bound():
    lw = random_log_weights(k=7)
    out = training_objective(lw, 1.0, bound="iw")
    torch.testing.assert_close(out.loss, -iw_bound(lw).mean())
    torch.testing.assert_close(out.bound, iw_bound(lw))


def test_training_loss_elbo_with_k_gt_1_averages_the_elbo_over_the_draws():
    lw = random_log_weights(k=7)
    out = training_objective(lw, 0.5)  # bound="elbo" by default, whatever k
    expected = -(lw.log_likelihood.mean(0) - 0.5 * lw.kl_per_dim.sum(-1)).mean()
    torch.testing.assert_close(out.loss, expected)
    assert torch.all(out.bound >= out.elbo - 1e-3)  # logged: the IW bound of the same draws, >= their ELBO


def test_iw_tempering_acts_on_the_regulariser_inside_the_weights():
    lw = random_log_weights(k=4)
    tempered = lw.log_likelihood + 0.3 * (lw.prior - lw.posterior)
    expected = -(torch.logsumexp(tempered, 0) - math.log(4)).mean()
    torch.testing.assert_close(training_objective(lw, 0.3, bound="iw").loss, expected)
    with pytest.raises(ValueError, match="objective.bound='nope'"):
        training_objective(lw, 1.0, bound="nope")


def test_an_analytic_kl_per_example_replaces_the_monte_carlo_kl():
    lw = random_log_weights(k=3)
    lw.kl_per_dim, lw.analytic_kl = None, torch.arange(6.0)
    out = training_objective(lw, 2.0)
    torch.testing.assert_close(out.kl, torch.arange(6.0))
    torch.testing.assert_close(out.loss, -(lw.log_likelihood.mean(0) - 2.0 * torch.arange(6.0)).mean())


def test_free_bits_per_dim_clamps_each_dimension_and_stops_its_gradient():
    mean = torch.tensor([[0.1, 3.0], [0.0, 2.0]], requires_grad=True)
    log_var = torch.zeros(2, 2)
    from vae_lab.posteriors import GaussianPosterior

    kl_per_dim = GaussianPosterior.kl_per_dim(mean, log_var)  # dim 0 tiny, dim 1 large
    lw = LogWeights(log_likelihood=torch.zeros(1, 2), prior=torch.zeros(1, 2), posterior=torch.zeros(1, 2),
                    kl_per_dim=kl_per_dim)
    clamped = free_bits_kl(lw, free_bits=0.5, per_dim=True)
    batch_mean_dim1 = kl_per_dim[:, 1].mean()
    torch.testing.assert_close(clamped.mean(), 0.5 + batch_mean_dim1)
    clamped.mean().backward()
    # the gradient of dimension 0 (below the floor) comes only from spreading the batch mean: zero on average
    assert mean.grad[:, 0].sum().abs() < 1e-6
    assert mean.grad[:, 1].abs().min() > 0.5


def test_free_bits_per_batch_and_errors():
    lw = random_log_weights(k=1)
    big = free_bits_kl(lw, free_bits=1e4, per_dim=False)
    assert math.isclose(float(big.mean()), 1e4, rel_tol=1e-6)
    lw.kl_per_dim = None
    with pytest.raises(ValueError, match="free_bits_per_dim"):
        free_bits_kl(lw, 1.0, per_dim=True)
    with pytest.raises(ValueError, match="k=3"):
        training_objective(random_log_weights(k=3), 1.0, free_bits=1.0, bound="iw")

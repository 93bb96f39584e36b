"""The categorical posterior (vae_lab/posteriors/categorical.py), the uniform categorical prior
(vae_lab/priors/categorical.py) and their regulariser cell (vae_lab/regularisers.py ``categorical_kl``)
against independent ground truth:

- relaxed (Gumbel-softmax) draws: their log density against ``torch.distributions.RelaxedOneHotCategorical``
  at the same temperature and logits (and uniform logits for the prior's relaxed density); the argmax of a
  relaxed draw is distributed as softmax(logits) (the Gumbel-max property, any temperature);
- evaluation draws: exactly one-hot, class frequencies against softmax(logits) (binomial tolerance);
- the exact KL(q || uniform) against ``torch.distributions.kl_divergence(Categorical, Categorical(uniform))``
  summed over the variables;
- discrete log q / log p (the importance-sampled NLL's) against ``Categorical.log_prob`` sums, over every one-hot
  state enumerated (and they normalise: Σ_z q(z) = Σ_z p(z) = 1);
- straight-through: the forward value is the one-hot argmax of the same Gumbel-softmax draw and the gradient
  to the logits is the relaxed draw's (computed with the same noise, without straight-through);
- the table cell for categorical × categorical: its analytic KL equals torch's KL, its log q / log p equal the
  torch densities above (relaxed in training, discrete in evaluation), for both bounds;
- the configs: ``prior.classes`` follows ``posterior.classes``.
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch.distributions import Categorical, RelaxedOneHotCategorical, kl_divergence

from vae_lab.posteriors.categorical import CategoricalParams, CategoricalPosterior
from vae_lab.priors.categorical import UniformCategoricalPrior
from vae_lab.regularisers import Encoding, categorical_kl, pick, regulariser_of

VARIABLES, CLASSES = 2, 3
DIM = VARIABLES * CLASSES


def logits_of(n: int = 3, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(n, DIM, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def grouped(x: torch.Tensor) -> torch.Tensor:
    return x.view(*x.shape[:-1], VARIABLES, CLASSES)


def torch_relaxed_log_prob(y: torch.Tensor, logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Σ_v log RelaxedOneHotCategorical(τ, l_v).log_prob(y_v) ``[..., dim] -> [...]``."""
    dist = RelaxedOneHotCategorical(torch.tensor(temperature, dtype=logits.dtype), logits=grouped(logits))
    return dist.log_prob(grouped(y)).sum(-1)


def all_one_hots(dtype=torch.float64) -> torch.Tensor:
    """Every one-hot z of VARIABLES × CLASSES ``[C^V, dim]``."""
    states = list(itertools.product(range(CLASSES), repeat=VARIABLES))
    return F.one_hot(torch.tensor(states), CLASSES).to(dtype).flatten(-2)


@pytest.mark.parametrize("temperature", [0.3, 1.0, 2.5])
def test_relaxed_log_density_matches_torch_relaxed_one_hot_categorical(temperature):
    torch.manual_seed(0)
    posterior = CategoricalPosterior(latent_dim=DIM, classes=CLASSES, temperature=temperature)
    logits = logits_of()
    params = CategoricalParams(logits, CLASSES)
    y = posterior.draw(params, num_samples=4)  # [k, n, dim]
    assert y.shape == (4, 3, DIM)
    assert torch.allclose(grouped(y).sum(-1), torch.ones(4, 3, VARIABLES, dtype=y.dtype))
    ours = posterior.log_q(y, params, relaxed=True)
    assert ours.shape == (4, 3)
    torch.testing.assert_close(ours, torch_relaxed_log_prob(y, logits, temperature), rtol=1e-9, atol=1e-9)
    # the same at points torch itself draws, and the prior's relaxed density (uniform logits)
    z = RelaxedOneHotCategorical(torch.tensor(temperature, dtype=torch.float64), logits=grouped(logits)).sample((2,))
    z = z.flatten(-2)
    torch.testing.assert_close(posterior.log_q(z, params), torch_relaxed_log_prob(z, logits, temperature))
    prior = UniformCategoricalPrior(latent_dim=DIM, classes=CLASSES)
    torch.testing.assert_close(prior.relaxed_log_prob(z, temperature),
                               torch_relaxed_log_prob(z, torch.zeros_like(logits), temperature))


def test_argmax_of_relaxed_draws_is_distributed_as_softmax_of_the_logits():
    """Gumbel-max: argmax softmax((l + g) / τ) ~ Cat(softmax(l)) for every τ."""
    torch.manual_seed(1)
    posterior = CategoricalPosterior(latent_dim=DIM, classes=CLASSES, temperature=0.5)
    logits = logits_of(1, seed=2)
    draws = 20000
    y = posterior.draw(CategoricalParams(logits, CLASSES), num_samples=draws)  # [k, 1, dim]
    freq = F.one_hot(grouped(y).argmax(-1), CLASSES).double().mean(0)[0]  # [V, C]
    probs = grouped(logits).softmax(-1)[0]
    tolerance = 5 * (probs * (1 - probs) / draws).sqrt() + 1e-3
    assert ((freq - probs).abs() <= tolerance).all(), (freq, probs)


def test_evaluation_draws_are_one_hot_with_softmax_frequencies():
    torch.manual_seed(2)
    posterior = CategoricalPosterior(latent_dim=DIM, classes=CLASSES, temperature=1.0)
    logits = logits_of(2, seed=3)
    draws = 20000
    z = posterior.draw(CategoricalParams(logits, CLASSES), num_samples=draws, relaxed=False)  # [k, n, dim]
    assert z.shape == (draws, 2, DIM)
    assert ((z == 0) | (z == 1)).all() and (grouped(z).sum(-1) == 1).all()
    freq = grouped(z).double().mean(0)  # [n, V, C]
    probs = grouped(logits).softmax(-1)
    tolerance = 5 * (probs * (1 - probs) / draws).sqrt() + 1e-3
    assert ((freq - probs).abs() <= tolerance).all(), (freq, probs)


def test_exact_kl_to_uniform_matches_torch_kl_divergence():
    posterior = CategoricalPosterior(latent_dim=DIM, classes=CLASSES)
    logits = logits_of(4, seed=4) * 3.0
    ours = posterior.kl_to_uniform(CategoricalParams(logits, CLASSES))
    uniform = Categorical(logits=torch.zeros(4, VARIABLES, CLASSES, dtype=torch.float64))
    reference = kl_divergence(Categorical(logits=grouped(logits)), uniform).sum(-1)
    assert ours.shape == (4,)
    torch.testing.assert_close(ours, reference)
    # at uniform logits the KL is 0; at a near-deterministic q it approaches V log C
    zero = posterior.kl_to_uniform(CategoricalParams(torch.zeros(1, DIM, dtype=torch.float64), CLASSES))
    assert abs(float(zero)) < 1e-12
    sharp = torch.tensor([[50.0, 0, 0, 0, 50.0, 0]], dtype=torch.float64)
    assert float(posterior.kl_to_uniform(CategoricalParams(sharp, CLASSES))) == pytest.approx(
        VARIABLES * math.log(CLASSES), abs=1e-12)


def test_discrete_log_q_and_log_p_match_categorical_log_prob_over_every_state():
    posterior = CategoricalPosterior(latent_dim=DIM, classes=CLASSES)
    prior = UniformCategoricalPrior(latent_dim=DIM, classes=CLASSES)
    logits = logits_of(2, seed=5)
    params = CategoricalParams(logits, CLASSES)
    z = all_one_hots().unsqueeze(1).expand(-1, 2, -1)  # [C^V, n, dim]
    log_q = posterior.log_q(z, params, relaxed=False)  # [C^V, n]
    reference = Categorical(logits=grouped(logits)).log_prob(grouped(z).argmax(-1)).sum(-1)
    torch.testing.assert_close(log_q, reference)
    torch.testing.assert_close(log_q.exp().sum(0), torch.ones(2, dtype=torch.float64))
    log_p = prior.log_prob(z)
    uniform = Categorical(logits=torch.zeros(VARIABLES, CLASSES, dtype=torch.float64))
    torch.testing.assert_close(log_p, uniform.log_prob(grouped(z).argmax(-1)).sum(-1))
    assert float(log_p.exp().sum(0)[0]) == pytest.approx(1.0, abs=1e-12)


def test_prior_samples_are_uniform_one_hots():
    prior = UniformCategoricalPrior(latent_dim=DIM, classes=CLASSES)
    draws = 12000
    z = prior.sample(draws, generator=torch.Generator().manual_seed(6))
    assert z.shape == (draws, DIM) and (grouped(z).sum(-1) == 1).all()
    freq = grouped(z).double().mean(0)
    assert ((freq - 1 / CLASSES).abs() < 5 * math.sqrt(2 / 9 / draws)).all()


def test_straight_through_is_one_hot_forward_with_the_relaxed_gradient():
    soft = CategoricalPosterior(latent_dim=DIM, classes=CLASSES, temperature=0.7)
    straight = CategoricalPosterior(latent_dim=DIM, classes=CLASSES, temperature=0.7, straight_through=True)
    weights = torch.randn(5, 3, DIM, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    grads, values = [], []
    for posterior in (soft, straight):
        logits = logits_of(3, seed=8).requires_grad_()
        torch.manual_seed(9)  # the same Gumbel noise for both
        y = posterior.draw(CategoricalParams(logits, CLASSES), num_samples=5)
        (weights * y).sum().backward()
        grads.append(logits.grad)
        values.append(y.detach())
    relaxed, hard = values
    assert ((hard == 0) | (hard == 1)).all() and (grouped(hard).sum(-1) == 1).all()
    assert torch.equal(grouped(hard).argmax(-1), grouped(relaxed).argmax(-1))
    assert grads[1].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0])


def encoding_of(posterior, logits, draws, relaxed, k, n):
    return Encoding(posterior, [CategoricalParams(logits, CLASSES)], [draws], relaxed, k, n)


@pytest.mark.parametrize("bound", ["elbo", "iw"])
def test_the_table_cell_is_the_exact_kl_and_the_torch_densities(bound):
    posterior = CategoricalPosterior(latent_dim=DIM, classes=CLASSES, temperature=0.6)
    prior = UniformCategoricalPrior(latent_dim=DIM, classes=CLASSES)
    cell = regulariser_of(posterior, prior, bound)
    assert cell is pick("categorical", "categorical", bound) is categorical_kl
    k, n = 3, 4
    logits = logits_of(n, seed=10)
    kl = kl_divergence(Categorical(logits=grouped(logits)),
                       Categorical(logits=torch.zeros(n, VARIABLES, CLASSES, dtype=torch.float64))).sum(-1)
    torch.manual_seed(11)
    # training: relaxed draws [k, n, dim] (the text families' layout)
    y = posterior.draw(CategoricalParams(logits, CLASSES), num_samples=k)
    terms = cell(encoding_of(posterior, logits, y, True, k, n), prior)
    torch.testing.assert_close(terms.analytic_kl, kl)
    torch.testing.assert_close(terms.posterior, torch_relaxed_log_prob(y, logits, 0.6))
    torch.testing.assert_close(terms.prior, torch_relaxed_log_prob(y, torch.zeros_like(logits), 0.6))
    assert terms.kl_per_dim is None and terms.terms == {}
    # evaluation: one-hot draws in the image family's layout ([k n, dim] over parameters repeated k times)
    z = posterior.draw(CategoricalParams(logits.repeat(k, 1), CLASSES), num_samples=1, relaxed=False)[0]
    terms = cell(encoding_of(posterior, logits.repeat(k, 1), z, False, k, n), prior)
    torch.testing.assert_close(terms.analytic_kl, kl)
    index = grouped(z).argmax(-1)
    reference = Categorical(logits=grouped(logits.repeat(k, 1))).log_prob(index).sum(-1)
    torch.testing.assert_close(terms.posterior, reference)
    torch.testing.assert_close(terms.prior, torch.full((k * n,), -VARIABLES * math.log(CLASSES), dtype=torch.float64))


def test_straight_through_training_log_weights_are_the_discrete_log_ratio_of_the_one_hot_draws():
    posterior = CategoricalPosterior(latent_dim=DIM, classes=CLASSES, temperature=0.7, straight_through=True)
    prior = UniformCategoricalPrior(latent_dim=DIM, classes=CLASSES)
    k, n = 2, 3
    logits = logits_of(n, seed=12)
    torch.manual_seed(13)
    y = posterior.draw(CategoricalParams(logits, CLASSES), num_samples=k)  # one-hot values
    terms = categorical_kl(encoding_of(posterior, logits, y, True, k, n), prior)
    index = grouped(y).argmax(-1)
    discrete = (Categorical(logits=grouped(logits)).log_prob(index).sum(-1)
                + VARIABLES * math.log(CLASSES))  # log q(z|x) - log p(z) of the one-hot values
    torch.testing.assert_close(terms.posterior - terms.prior, discrete)


def test_prior_classes_follow_the_posterior_in_the_configs(make_config):
    cfg = make_config(["posterior=categorical", "prior=categorical", "posterior.classes=4",
                       "posterior.temperature=0.5", "posterior.straight_through=true"])
    posterior = instantiate(cfg.posterior)(latent_dim=8)
    prior = instantiate(cfg.prior)(latent_dim=8)
    assert (posterior.classes, posterior.variables, posterior.temperature) == (4, 2, 0.5)
    assert posterior.straight_through is True
    assert (prior.classes, prior.variables) == (4, 2)
    for bound in ("elbo", "iw"):
        assert regulariser_of(posterior, prior, bound) is categorical_kl

"""The parts that prove the extension seams (issue 24) against ground truth of their own:

- the categorical posterior and its uniform prior against ``torch.distributions`` (Concrete density,
  one-hot draws' frequencies, the exact KL, discrete log q) and the straight-through estimator;
- the VQ posterior against a brute-force nearest code, its straight-through gradient and the stop-gradients of
  its codebook and commitment losses, the uniform prior over codes;
- the VampPrior against ``MixtureSameFamily`` built from the encoder at the pseudo-inputs, the encoder's batch
  norm statistics left alone, gradients reaching the pseudo-inputs;
- the MMD penalty against an explicit double-loop unbiased U-statistic.
"""
from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal, RelaxedOneHotCategorical
from torch.distributions import kl_divergence

from vae_lab.models.image_vae import ImageVAE
from vae_lab.penalties import MMD
from vae_lab.posteriors.categorical import CategoricalParams, CategoricalPosterior, concrete_log_prob
from vae_lab.posteriors.gaussian import GaussianPosterior
from vae_lab.posteriors.vq import CodeParams, VectorQuantizedPosterior
from vae_lab.priors.categorical import UniformCategoricalPrior
from vae_lab.priors.codes import UniformCodesPrior
from vae_lab.priors.vamp import VampPrior
from vae_lab.regularisers import Encoding, categorical_kl, vector_quantised

PIXELS = 16


def image_model(posterior, prior, latents: int = 12) -> ImageVAE:
    torch.manual_seed(0)
    return ImageVAE(num_pixels=PIXELS, image_shape=(4, 4), pixel_mean=torch.full((PIXELS,), 0.3), prior=prior,
                    posterior=posterior,
                    struct={"num_groups": 1, "group_size": latents, "hidden_layers": 1, "hidden_units": 8})


def pixels(size: int = 6) -> dict:
    return {"pixels": (torch.rand(size, PIXELS, generator=torch.Generator().manual_seed(1)) < 0.4).float()}


# --- categorical (Gumbel-softmax) ---------------------------------------------------------------------------

def test_the_concrete_density_is_torchs_relaxed_one_hot_categorical():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 5)
    for temperature in (0.5, 1.0, 2.0):
        reference = RelaxedOneHotCategorical(torch.tensor(temperature), logits=logits)
        y = reference.sample()
        assert torch.allclose(concrete_log_prob(y, logits.log_softmax(-1), temperature), reference.log_prob(y),
                              atol=1e-4, rtol=1e-5)


def test_categorical_draws_are_one_hot_with_the_posteriors_frequencies():
    torch.manual_seed(0)
    posterior = CategoricalPosterior(latent_dim=8, classes=4)
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5, 0.0, 0.0, 0.0, 3.0]])
    z = posterior.draw(CategoricalParams(logits, 4), num_samples=20000, relaxed=False)  # [k, 1, 8]
    grouped = z.view(20000, 2, 4)
    assert set(z.unique().tolist()) == {0.0, 1.0} and torch.equal(grouped.sum(-1), torch.ones(20000, 2))
    assert torch.allclose(grouped.mean(0), logits.view(2, 4).softmax(-1), atol=0.015)


def test_the_categorical_kl_and_discrete_log_q_are_torchs():
    torch.manual_seed(0)
    posterior, prior = CategoricalPosterior(latent_dim=12, classes=3), UniformCategoricalPrior(latent_dim=12, classes=3)
    params = CategoricalParams(torch.randn(5, 12), 3)
    q = Categorical(logits=params.grouped())  # batch [5, 4]
    uniform = Categorical(logits=torch.zeros(5, 4, 3))
    assert torch.allclose(posterior.kl_to_uniform(params), kl_divergence(q, uniform).sum(-1), atol=1e-5)
    z = posterior.draw(params, num_samples=7, relaxed=False)  # [7, 5, 12]
    index = z.view(7, 5, 4, 3).argmax(-1)
    assert torch.allclose(posterior.log_q(z, params, relaxed=False), q.log_prob(index).sum(-1), atol=1e-5)
    assert torch.allclose(prior.log_prob(z), torch.full((7, 5), -4 * math.log(3)))
    # the regulariser cell of the table: the exact KL, and in evaluation the exact discrete densities
    terms = categorical_kl(Encoding(posterior, [params], [z], False, 7, 5), prior)
    assert torch.allclose(terms.analytic_kl, kl_divergence(q, uniform).sum(-1), atol=1e-5)
    assert torch.allclose(terms.posterior, q.log_prob(index).sum(-1), atol=1e-5)
    relaxed = posterior.draw(params, num_samples=7, relaxed=True)
    terms = categorical_kl(Encoding(posterior, [params], [relaxed], True, 7, 5), prior)
    reference = RelaxedOneHotCategorical(torch.tensor(1.0), logits=torch.zeros(4, 3))
    assert torch.allclose(terms.prior, reference.log_prob(relaxed.view(7, 5, 4, 3)).sum(-1), atol=1e-4)


def test_straight_through_draws_are_one_hot_forward_with_gradients_to_the_logits():
    torch.manual_seed(0)
    logits = torch.randn(4, 10, requires_grad=True)
    posterior = CategoricalPosterior(latent_dim=10, classes=5, temperature=0.7, straight_through=True)
    y = posterior.draw(CategoricalParams(logits, 5), num_samples=3)
    assert set(y.detach().unique().tolist()) == {0.0, 1.0}
    (y * torch.arange(10.0)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    soft = CategoricalPosterior(latent_dim=10, classes=5, temperature=0.7).draw(CategoricalParams(logits, 5))
    assert not set(soft.detach().unique().tolist()) <= {0.0, 1.0}  # without it the draws are relaxed


def test_a_categorical_image_vae_scores_one_hot_latents_in_evaluation():
    model = image_model(partial(CategoricalPosterior, classes=4), partial(UniformCategoricalPrior, classes=4)).eval()
    weights = model.log_weights(pixels(), 5)
    assert torch.allclose(weights.prior, torch.full_like(weights.prior, -3 * math.log(4)))
    assert bool((weights.posterior <= 0).all())  # log q of a discrete draw is a log-probability


# --- VQ-VAE -------------------------------------------------------------------------------------------------

def test_quantisation_picks_the_nearest_code_and_passes_gradients_straight_through():
    torch.manual_seed(0)
    posterior = VectorQuantizedPosterior(latent_dim=12, codebook_size=7, code_dim=3)
    z_e = torch.randn(5, 12, requires_grad=True)
    params = CodeParams(z_e, 3, posterior.codebook)
    vectors = z_e.detach().view(-1, 3)
    codes = posterior.codebook.detach()
    brute = torch.tensor([min(range(7), key=lambda k, v=v: float(((v - codes[k]) ** 2).sum())) for v in vectors])
    assert torch.equal(params.indices().flatten(), brute)
    z = posterior.draw(params, num_samples=2)
    assert torch.allclose(z[0], posterior.codebook.detach()[brute].view(5, 12)) and torch.equal(z[0], z[1])
    upstream = torch.randn_like(z)
    (z * upstream).sum().backward()
    assert torch.allclose(z_e.grad, upstream.sum(0))  # the identity, summed over the k copies
    assert posterior.codebook.grad is None  # the decoder's gradient does not move the codes


def test_the_codebook_and_commitment_losses_stop_the_right_gradients():
    torch.manual_seed(0)
    posterior = VectorQuantizedPosterior(latent_dim=6, codebook_size=4, code_dim=3)
    z_e = torch.randn(2, 6, requires_grad=True)
    params = CodeParams(z_e, 3, posterior.codebook)
    codebook, commitment = posterior.quantisation_losses(params)
    z_q = posterior.codebook.detach()[params.indices()].view(2, 6)
    hand = ((z_e.detach() - z_q) ** 2).sum(-1)  # summed over the latents, one value an example
    assert torch.allclose(codebook, hand) and torch.allclose(commitment, hand)
    codebook.sum().backward(retain_graph=True)
    assert z_e.grad is None and posterior.codebook.grad.abs().sum() > 0
    posterior.codebook.grad = None
    commitment.sum().backward()
    assert posterior.codebook.grad is None and torch.allclose(z_e.grad, 2 * (z_e.detach() - z_q))


def test_the_vq_cell_gives_the_uniform_prior_and_the_named_loss_terms():
    model = image_model(partial(VectorQuantizedPosterior, codebook_size=8, code_dim=3),
                        partial(UniformCodesPrior, codebook_size=8, code_dim=3)).train()
    weights = model.log_weights(pixels(), 1)
    assert torch.allclose(weights.prior, torch.full_like(weights.prior, -4 * math.log(8)))  # 12 latents, 4 positions
    assert torch.equal(weights.posterior, torch.zeros_like(weights.posterior))
    assert set(weights.terms) == {"codebook", "commitment"} and weights.terms["codebook"].shape == (6,)
    samples = model.prior.sample(3, torch.Generator().manual_seed(0))  # codes looked up in the codebook
    codes = model.posterior.codebook.detach()
    assert all(bool((torch.cdist(row.view(-1, 3), codes).min(-1).values < 1e-6).all()) for row in samples)
    encoding = Encoding(model.posterior, [CodeParams(torch.randn(6, 12), 3, model.posterior.codebook)],
                        [torch.zeros(6, 12)], True, 1, 6)
    assert torch.allclose(vector_quantised(encoding, model.prior).analytic_kl, torch.full((6,), 4 * math.log(8)))


# --- VampPrior ----------------------------------------------------------------------------------------------

def vamp_model(components: int = 5) -> ImageVAE:
    return image_model(partial(GaussianPosterior), partial(VampPrior, components=components, init_mean=0.5,
                                                           init_std=0.2))


def test_the_vamp_prior_is_the_mixture_of_the_encoders_posteriors_at_the_pseudo_inputs():
    model = vamp_model().train()
    z = torch.randn(4, 3, 12, generator=torch.Generator().manual_seed(2))
    log_p = model.prior.log_prob(z)
    params = model.encode_inputs(model.prior.pseudo_inputs())
    reference = MixtureSameFamily(Categorical(logits=torch.zeros(5)),
                                  Independent(Normal(params.mean, (0.5 * params.log_var).exp()), 1))
    assert log_p.shape == (4, 3) and torch.allclose(log_p, reference.log_prob(z), atol=1e-4)
    inputs = model.prior.pseudo_inputs().detach()
    assert float(inputs.min()) >= 0 and float(inputs.max()) <= 1


def test_the_vamp_prior_leaves_the_batch_norm_statistics_and_mode_alone_and_learns_its_inputs():
    model = vamp_model().train()
    before = {name: value.clone() for name, value in model.state_dict().items() if "running" in name}
    assert before, "the 1-layer nets have batch norm"
    model.prior.log_prob(torch.randn(8, 12)).sum().backward()
    after = {name: value for name, value in model.state_dict().items() if "running" in name}
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert model.encoders[0].training  # its train / eval state restored
    assert model.prior.raw_inputs.grad is not None and model.prior.raw_inputs.grad.abs().sum() > 0


# --- MMD ----------------------------------------------------------------------------------------------------

def loop_mmd(z: torch.Tensor, y: torch.Tensor, kernel: str, scales) -> float:
    n, dim = z.shape

    def k(a, b):
        d = float(((a - b) ** 2).sum())
        return sum((2 * dim * s) / (2 * dim * s + d) if kernel == "imq" else math.exp(-d / (2 * dim * s))
                   for s in scales)

    within = sum(k(z[i], z[j]) + k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    across = sum(k(z[i], y[j]) for i in range(n) for j in range(n)) / (n * n)
    return within - 2 * across


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_the_mmd_is_the_unbiased_u_statistic(kernel):
    torch.manual_seed(0)
    z, y = torch.randn(7, 3, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64) + 0.5
    mmd = MMD(kernel=kernel, scales=(0.5, 2.0))
    assert float(mmd.estimate(z, y)) == pytest.approx(loop_mmd(z, y, kernel, (0.5, 2.0)), rel=1e-9, abs=1e-12)


def test_the_mmd_is_near_zero_for_one_distribution_and_positive_for_two():
    torch.manual_seed(0)
    mmd = MMD()
    same = [float(mmd.estimate(torch.randn(200, 4), torch.randn(200, 4))) for _ in range(10)]
    shifted = float(mmd.estimate(torch.randn(200, 4), torch.randn(200, 4) + 1.0))
    assert abs(sum(same) / len(same)) < 0.01 and shifted > 20 * max(abs(value) for value in same)

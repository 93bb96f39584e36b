"""The vector-quantised posterior (vae_lab/posteriors/vq.py), the uniform prior over its codes
(vae_lab/priors/codes.py), their table cell (vae_lab/regularisers.py ``vector_quantised``) and
conf/model/vq_vae.yaml + conf/posterior/vq.yaml, against independent ground truth:

- quantisation: a brute-force argmin of squared distances, by explicit loops over positions and codes
  (also with more than 25 rows, where ``torch.cdist`` switches to its matrix-product path);
- straight-through: the value is the chosen code, the gradient to z_e is the upstream gradient (the identity)
  and none reaches the codebook through the draw;
- the codebook loss Σ_latents (sg[z_e] - e)² and the commitment loss Σ_latents (z_e - sg[e])² (the code's
  reduction: summed over the latents of an example, ``[n]``; the batch mean is taken by ``weighted_terms``):
  values by hand, and their gradients by hand (2 (e - z_e) scattered to the chosen codes only / 2 (z_e - e) to
  the encoder only);
- the uniform prior: log p = -positions · log K for every z, exp(log p) summed over all K^positions code tuples is
  1, its draws are codebook rows;
- the cell and the model: ``codebook`` / ``commitment`` appear by name in ``LogWeights.terms`` with those values,
  the analytic KL is positions · log K, log q = 0, the code perplexity is exp(entropy) of the codes' use by hand,
  and the training loss adds them with the config's weights (codebook 1, commitment 0.25).
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from vae_lab.instantiators import built
from vae_lab.objectives import elbo_loss, training_objective
from vae_lab.posteriors.vq import CodeParams, VectorQuantizedPosterior
from vae_lab.priors.codes import UniformCodesPrior
from vae_lab.regularisers import Encoding, regulariser_of, vector_quantised

K, CODE_DIM, POSITIONS = 5, 3, 4
DIM = CODE_DIM * POSITIONS


def posterior_with_codes(seed: int = 0) -> VectorQuantizedPosterior:
    posterior = VectorQuantizedPosterior(latent_dim=DIM, codebook_size=K, code_dim=CODE_DIM)
    with torch.no_grad():  # codes spread like encoder outputs, so the nearest one is well defined
        posterior.codebook.copy_(torch.randn(K, CODE_DIM, generator=torch.Generator().manual_seed(seed)))
    return posterior


def encoder_outputs(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, DIM, generator=torch.Generator().manual_seed(seed))


def brute_force_indices(z_e: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """argmin_k Σ_d (z_e[i, p, d] - codes[k, d])², by loops ``[n, positions]``."""
    n = z_e.shape[0]
    out = torch.empty(n, POSITIONS, dtype=torch.long)
    for i in range(n):
        for p in range(POSITIONS):
            vector = z_e[i, p * CODE_DIM:(p + 1) * CODE_DIM].double()
            distances = [float(((vector - codes[k].double()) ** 2).sum()) for k in range(codes.shape[0])]
            out[i, p] = min(range(codes.shape[0]), key=distances.__getitem__)
    return out


@pytest.mark.parametrize("n", [3, 9])  # 12 rows (direct distances) and 36 rows (cdist's matrix-product path)
def test_nearest_code_is_the_brute_force_argmin(n):
    posterior = posterior_with_codes()
    z_e = encoder_outputs(n)
    params = posterior.params(z_e.unsqueeze(1))
    expected = brute_force_indices(z_e, posterior.codebook.detach())
    assert torch.equal(params.indices(), expected)
    looked_up = posterior.codebook.detach()[expected].flatten(-2)
    assert torch.equal(posterior.quantised(params).detach(), looked_up)
    assert torch.equal(params.means(), looked_up)
    assert torch.equal(posterior.point(params).detach(), looked_up)


def test_nearest_code_with_the_default_start_of_the_codebook():
    posterior = VectorQuantizedPosterior(latent_dim=DIM, codebook_size=K, code_dim=CODE_DIM, seed=3)
    codes = posterior.codebook.detach()
    assert codes.abs().max() <= 1.0 / K
    z_e = 0.2 * encoder_outputs(9, seed=4) / K
    assert torch.equal(CodeParams(z_e, CODE_DIM, posterior.codebook).indices(), brute_force_indices(z_e, codes))


def test_straight_through_value_is_the_code_and_the_gradient_the_identity():
    posterior = posterior_with_codes()
    z_e = encoder_outputs(3).requires_grad_()
    params = posterior.params(z_e.unsqueeze(1))
    draw = posterior.draw(params, num_samples=2)  # [k, n, dim]
    assert draw.shape == (2, 3, DIM)
    code = posterior.codebook.detach()[brute_force_indices(z_e.detach(), posterior.codebook.detach())].flatten(-2)
    torch.testing.assert_close(draw[0].detach(), code, rtol=0, atol=1e-6)
    torch.testing.assert_close(draw[1].detach(), code, rtol=0, atol=1e-6)
    upstream = torch.randn(3, DIM, generator=torch.Generator().manual_seed(5))
    (upstream * draw[0]).sum().backward()
    assert torch.equal(z_e.grad, upstream)
    assert posterior.codebook.grad is None or not posterior.codebook.grad.any()
    assert float(posterior.log_q(draw, params).abs().sum()) == 0.0 and posterior.log_q(draw, params).shape == (2, 3)


def test_codebook_and_commitment_losses_by_hand_with_the_right_stop_gradients():
    posterior = posterior_with_codes()
    n = 4
    z_e = encoder_outputs(n, seed=6).requires_grad_()
    params = posterior.params(z_e.unsqueeze(1))
    index = brute_force_indices(z_e.detach(), posterior.codebook.detach())
    z_q = posterior.codebook.detach()[index].flatten(-2)
    ze = z_e.detach()
    by_hand = torch.tensor([sum(float((ze[i, j] - z_q[i, j]) ** 2) for j in range(DIM)) for i in range(n)])
    codebook, commitment = posterior.quantisation_losses(params)
    assert codebook.shape == commitment.shape == (n,)  # summed over the latents of each example
    torch.testing.assert_close(codebook.detach(), by_hand.float())
    torch.testing.assert_close(commitment.detach(), by_hand.float())

    # the codebook loss moves only the codes: d/de_k = Σ over the positions using code k of 2 (e_k - z_e)
    codebook.sum().backward(retain_graph=True)
    assert z_e.grad is None or not z_e.grad.any()
    expected = torch.zeros(K, CODE_DIM)
    for i in range(n):
        for p in range(POSITIONS):
            piece = slice(p * CODE_DIM, (p + 1) * CODE_DIM)
            expected[index[i, p]] += 2 * (z_q[i, piece] - z_e.detach()[i, piece])
    torch.testing.assert_close(posterior.codebook.grad, expected)
    unused = sorted(set(range(K)) - set(index.flatten().tolist()))
    assert all(not posterior.codebook.grad[k].any() for k in unused)

    # the commitment loss moves only the encoder: d/dz_e = 2 (z_e - e)
    posterior.codebook.grad = None
    commitment.sum().backward()
    assert posterior.codebook.grad is None or not posterior.codebook.grad.any()
    torch.testing.assert_close(z_e.grad, 2 * (z_e.detach() - z_q))


def test_uniform_prior_over_codes():
    prior = UniformCodesPrior(latent_dim=DIM, codebook_size=K, code_dim=CODE_DIM)
    assert prior.positions == POSITIONS
    z = torch.randn(2, 3, DIM)
    torch.testing.assert_close(prior.log_prob(z), torch.full((2, 3), -POSITIONS * math.log(K)))
    # a normalised distribution over the K^positions code tuples (tiny case, enumerated)
    small = UniformCodesPrior(latent_dim=2 * CODE_DIM, codebook_size=3, code_dim=CODE_DIM)
    posterior = posterior_with_codes()
    tuples = torch.tensor(list(itertools.product(range(3), repeat=2)))  # [9, 2]
    latents = posterior.lookup(tuples)
    assert float(small.log_prob(latents).double().exp().sum()) == pytest.approx(1.0, abs=1e-6)
    # draws are codebook rows at each position (after attach)
    model = torch.nn.Module()
    model.posterior = posterior
    prior.attach(model)
    draws = prior.sample(50, generator=torch.Generator().manual_seed(7))
    assert draws.shape == (50, DIM) and not draws.requires_grad
    rows = draws.view(50, POSITIONS, CODE_DIM)
    matches = (rows.unsqueeze(-2) == posterior.codebook.detach()).all(-1)  # [50, positions, K]
    assert (matches.sum(-1) == 1).all()


def test_the_cell_names_its_terms_and_its_constant_kl():
    posterior = posterior_with_codes()
    prior = UniformCodesPrior(latent_dim=DIM, codebook_size=K, code_dim=CODE_DIM)
    assert regulariser_of(posterior, prior, "elbo") is regulariser_of(posterior, prior, "iw") is vector_quantised
    k, n = 2, 3
    z_e = encoder_outputs(n, seed=8).repeat(k, 1)  # the image family's layout: [k n, dim], k-major
    params = posterior.params(z_e.unsqueeze(1))
    draws = posterior.draw(params)[0]
    terms = vector_quantised(Encoding(posterior, [params], [draws], True, k, n), prior)
    assert set(terms.terms) == {"codebook", "commitment"} and set(terms.metrics) == {"code_perplexity"}
    index = brute_force_indices(z_e[:n], posterior.codebook.detach())
    z_q = posterior.codebook.detach()[index].flatten(-2)
    by_hand = ((z_e[:n] - z_q) ** 2).sum(-1)
    for name in ("codebook", "commitment"):
        assert terms.terms[name].shape == (n,)
        torch.testing.assert_close(terms.terms[name].detach(), by_hand)
    torch.testing.assert_close(terms.analytic_kl, torch.full((n,), POSITIONS * math.log(K)))
    assert terms.analytic_kl[0] == pytest.approx(posterior.kl_to_uniform())
    assert not terms.posterior.any() and terms.posterior.shape == (k * n,)
    torch.testing.assert_close(terms.prior, torch.full((k * n,), -POSITIONS * math.log(K)))
    counts = torch.bincount(index.flatten(), minlength=K).double() / index.numel()
    nonzero = counts[counts > 0]
    perplexity = math.exp(float(-(nonzero * nonzero.log()).sum()))
    torch.testing.assert_close(terms.metrics["code_perplexity"], torch.full((n,), perplexity, dtype=torch.float32))


def test_vq_vae_config_puts_the_terms_in_the_log_weights_and_weights_them(make_config):
    cfg = make_config(["model=vq_vae", "posterior.code_dim=3", "posterior.codebook_size=4",
                       "model.struct.group_size=6", "model.struct.hidden_units=8", "model.struct.hidden_layers=1"])
    assert cfg.objective.weights == {"codebook": 1.0, "commitment": 0.25}
    assert (cfg.prior.codebook_size, cfg.prior.code_dim) == (4, 3)  # the prior follows the posterior
    torch.manual_seed(0)
    model = built(cfg.model, prior=built(cfg.prior), posterior=built(cfg.posterior), bound=cfg.objective.bound,
                  num_pixels=16, image_shape=(4, 4), pixel_mean=torch.full((16,), 0.3))
    assert isinstance(model.posterior, VectorQuantizedPosterior) and isinstance(model.prior, UniformCodesPrior)
    assert (model.prior.positions, model.prior.codebook_size) == (2, 4)
    pixels = (torch.rand(5, 16, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    log_weights = model.train().log_weights({"pixels": pixels}, num_samples=2)
    assert set(log_weights.terms) == {"codebook", "commitment"}
    assert all(value.shape == (5,) for value in log_weights.terms.values())
    torch.testing.assert_close(log_weights.kl(), torch.full((5,), 2 * math.log(4)))
    assert not log_weights.posterior.any()

    weights = dict(cfg.objective.weights)
    out = training_objective(log_weights, bound="elbo", term_weights=weights)
    expected = (elbo_loss(log_weights, 1.0, 0.0, True).mean() + 1.0 * log_weights.terms["codebook"].mean()
                + 0.25 * log_weights.terms["commitment"].mean())
    torch.testing.assert_close(out.loss, expected)
    assert set(out.terms) == {"codebook", "commitment"}
    # the terms' gradients: the codebook loss reaches the codes, and the loss reaches the encoder
    out.loss.backward()
    assert model.posterior.codebook.grad.abs().sum() > 0
    assert model.encoders[0].output.weight.grad.abs().sum() > 0

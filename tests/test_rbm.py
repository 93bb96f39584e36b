"""RBM prior: energies, free energies, conditionals, mean field and exact log Z against brute force."""

import pytest
import torch

from tests.rbm_helpers import random_gaussian_rbm
from vae_lab.priors import RBM, GibbsSweeper, enumerate_states
from vae_lab.priors.boltzmann import UniformWords, bernoulli_from_words_


def random_rbm(n_left, n_right, scale=0.5, seed=0, dtype=torch.float64):
    return random_gaussian_rbm(n_left, n_right, scale, seed, dtype)


def brute_log_z(rbm):
    states = enumerate_states(rbm.n_units, dtype=rbm.weight.dtype)  # [2^n, n]
    return torch.logsumexp(-rbm.energy(states).double(), dim=0)


def test_enumerate_states_is_all_binary_vectors():
    states = enumerate_states(4)
    assert states.shape == (16, 4)
    assert len({tuple(s.tolist()) for s in states}) == 16
    assert torch.equal(enumerate_states(4, 5, 9), states[5:9])


def test_energy_matches_definition_binary_relaxed_and_batched():
    rbm = random_rbm(3, 4)
    z = torch.rand(2, 5, 7, dtype=torch.float64)  # relaxed, two leading dims
    a, b, w = rbm.bias_left, rbm.bias_right, rbm.weight
    expected = torch.empty(2, 5, dtype=torch.float64)
    for i in range(2):
        for j in range(5):
            left, right = z[i, j, :3], z[i, j, 3:]
            expected[i, j] = -(a @ left) - (b @ right) - left @ w @ right
    assert torch.allclose(rbm.energy(z), expected)
    binary = (z > 0.5).double()
    assert torch.allclose(rbm.log_prob_unnormalized(binary), -rbm.energy(binary))


@pytest.mark.parametrize("n_left,n_right", [(5, 7), (7, 5), (6, 6), (1, 11)])
@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_exact_log_z_matches_brute_force(n_left, n_right, scale):
    rbm = random_rbm(n_left, n_right, scale)
    assert torch.allclose(rbm.exact_log_z(), brute_log_z(rbm), rtol=0, atol=1e-10)


def test_exact_log_z_chunking_and_float32():
    rbm = random_rbm(8, 4, 1.0)
    exact = rbm.exact_log_z()
    assert exact.dtype == torch.float64
    assert torch.allclose(rbm.exact_log_z(max_elements=20), exact, rtol=0, atol=1e-10)  # chunks of ~2 states
    rbm32 = rbm.to(torch.float32)
    assert torch.allclose(rbm32.exact_log_z(), exact, rtol=0, atol=1e-5)


def test_chunked_exact_log_z_gradient_matches_unchunked():
    rbm = random_rbm(6, 9, 1.0)
    full = torch.autograd.grad(rbm.exact_log_z(), list(rbm.parameters()))
    chunked = torch.autograd.grad(rbm.exact_log_z(max_elements=50), list(rbm.parameters()))  # checkpointed chunks
    for grad_full, grad_chunked in zip(full, chunked):
        assert torch.allclose(grad_full, grad_chunked, atol=1e-12)


def test_free_energies_sum_out_the_other_side():
    rbm = random_rbm(4, 5, 1.0)
    left_states, right_states = enumerate_states(4), enumerate_states(5)
    # -F(z_left) = logsumexp over z_right of -E(z_left, z_right)
    pairs = torch.cat([left_states[:, None, :].expand(-1, 32, -1), right_states[None].expand(16, -1, -1)], -1)
    neg_energy = -rbm.energy(pairs)  # [16, 32]
    assert torch.allclose(-rbm.free_energy_left(left_states), torch.logsumexp(neg_energy, 1))
    assert torch.allclose(-rbm.free_energy_right(right_states), torch.logsumexp(neg_energy, 0))


def test_exact_moments_match_brute_force():
    rbm = random_rbm(4, 6, 1.0)
    for flipped in (rbm, random_rbm(6, 4, 1.0)):
        states = enumerate_states(10)
        prob = torch.softmax(-flipped.energy(states), dim=0)
        mean, second = flipped.exact_moments()
        assert torch.allclose(mean, prob @ states, atol=1e-12)
        assert torch.allclose(second, (states * prob[:, None]).t() @ states, atol=1e-12)


def test_exact_log_z_gradient_is_minus_expected_energy_gradient():
    """d log Z / dW = E[z_left z_right^T], d log Z / da = E[z_left], d log Z / db = E[z_right]."""
    rbm = random_rbm(3, 5, 1.0)
    rbm.exact_log_z().backward()
    mean, second = rbm.exact_moments()
    assert torch.allclose(rbm.bias_left.grad, mean[:3])
    assert torch.allclose(rbm.bias_right.grad, mean[3:])
    assert torch.allclose(rbm.weight.grad, second[:3, 3:])


def test_conditional_sampling_matches_sigmoid():
    rbm = random_rbm(6, 8, 1.0, dtype=torch.float32)
    generator = torch.Generator().manual_seed(1)
    z_left = (torch.rand(20000, 6, generator=generator) < 0.5).float()
    z_right = rbm.sample_right(z_left, generator)
    assert set(z_right.unique().tolist()) <= {0.0, 1.0}
    probs = torch.sigmoid(rbm.logits_right(z_left)).detach()  # [chains, n_right]
    # z-score of sum_i (z_i - p_i) over 20000 independent draws per unit
    z_scores = (z_right - probs).sum(0) / (probs * (1 - probs)).sum(0).sqrt()
    assert z_scores.abs().max() < 4.5
    z_left_new = rbm.sample_left(z_right, generator)
    probs = torch.sigmoid(rbm.logits_left(z_right)).detach()
    assert ((z_left_new - probs).sum(0) / (probs * (1 - probs)).sum(0).sqrt()).abs().max() < 4.5


def test_gibbs_keeps_shapes_dtype_and_is_seeded():
    rbm = random_rbm(5, 3, 1.0, dtype=torch.float32)
    z_left = torch.zeros(7, 5)
    first = rbm.gibbs(z_left, 3, torch.Generator().manual_seed(3))
    second = rbm.gibbs(z_left, 3, torch.Generator().manual_seed(3))
    assert first[0].shape == (7, 5) and first[1].shape == (7, 3) and first[0].dtype == torch.float32
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_mean_field_reaches_a_fixed_point():
    rbm = random_rbm(6, 4, 0.3)
    q_left, q_right = rbm.mean_field(num_iterations=500, tolerance=1e-12)
    assert torch.allclose(q_right, torch.sigmoid(rbm.bias_right + q_left @ rbm.weight), atol=1e-9)
    assert torch.allclose(q_left, torch.sigmoid(rbm.bias_left + q_right @ rbm.weight.t()), atol=1e-9)
    batched, _ = rbm.mean_field(torch.rand(2, 3, 6, dtype=torch.float64), num_iterations=500, tolerance=1e-12)
    assert batched.shape == (2, 3, 6)
    assert torch.allclose(batched, q_left.expand(2, 3, 6), atol=1e-6)  # weak coupling: unique fixed point


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bernoulli_from_words_is_within_two_to_the_minus_16_of_p(dtype):
    """Over all 2^16 words (each equally likely), the share that gives z = 1 is p rounded to a multiple
    of 2^-16: exact at 0 and 1, never further than 2^-16 from p."""
    words = torch.arange(-(2**15), 2**15, dtype=torch.int16)  # every signed 16-bit word once
    probs = torch.cat([torch.tensor([0.0, 1.0, 0.5, 2.0**-17, 1 - 2.0**-17, 1e-9]),
                       torch.rand(200, generator=torch.Generator().manual_seed(0))]).to(dtype)
    for p in probs:
        z = bernoulli_from_words_(p.expand(words.shape).clone(), words)
        assert set(z.unique().tolist()) <= {0.0, 1.0}
        share = float(z.double().mean())
        assert abs(share - float(p)) <= 2.0**-16, (float(p), share)
    assert bernoulli_from_words_(torch.zeros(words.shape, dtype=dtype), words).sum() == 0
    assert bernoulli_from_words_(torch.ones(words.shape, dtype=dtype), words).sum() == words.numel()


def test_uniform_words_are_uniform_and_seeded():
    words = UniformWords((400, 250))
    first = words.draw(torch.Generator().manual_seed(5)).clone()
    assert torch.equal(first, words.draw(torch.Generator().manual_seed(5)))
    counts = torch.bincount((first.long() + 2**15).flatten() >> 12, minlength=16).double()  # 16 bins
    expected = first.numel() / 16
    assert float(((counts - expected) ** 2 / expected).sum()) < 45  # chi-square, 15 dof: p < 1e-4
    bits = ((first.long()[..., None] >> torch.arange(16)) & 1).double().mean((0, 1))  # every bit fair
    assert float((bits - 0.5).abs().max()) < 4.5 * 0.5 / first.numel() ** 0.5


def test_gibbs_sweeper_conditionals_match_sigmoid():
    rbm = random_rbm(6, 8, 1.0, dtype=torch.float32)
    sweeper = GibbsSweeper(20000, 6, 8)
    sweeper.set_params(*(p.detach() for p in (rbm.bias_left, rbm.bias_right, rbm.weight)))
    sweeper.generator = torch.Generator().manual_seed(2)
    z_left = (torch.rand(20000, 6, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    z_right = sweeper.sweep_right(z_left).clone()
    probs = torch.sigmoid(rbm.logits_right(z_left)).detach()
    assert ((z_right - probs).sum(0) / (probs * (1 - probs)).sum(0).sqrt()).abs().max() < 4.5
    z_left_new = sweeper.sweep_left(z_right)
    probs = torch.sigmoid(rbm.logits_left(z_right)).detach()
    assert ((z_left_new - probs).sum(0) / (probs * (1 - probs)).sum(0).sqrt()).abs().max() < 4.5

"""DVAE# relaxed RBM priors: augmented energy, mean-field / exact marginals and the Gaussian integral trick."""

import math

import pytest
import torch

from tests.rbm_helpers import random_gaussian_rbm
from vae_lab.priors import enumerate_states
from vae_lab.priors.relaxed import (augmented_energy, exact_log_marginal, gaussian_integral_lambda,
                                    gaussian_integral_log_marginal, mean_field_log_marginal)

BETA = 10.0


def exponential_log_r0(beta):
    """log r(zeta | z=0) for r(zeta|0) = beta e^{-beta zeta} / (1 - e^{-beta}) on [0, 1]."""
    return lambda zeta: math.log(beta) - beta * zeta - math.log(-math.expm1(-beta))


def power_log_r0(beta):
    """log r(zeta | z=0) for the power-function smoothing r(zeta|0) = lam zeta^(lam - 1), lam = 1/beta."""
    lam = 1.0 / beta
    return lambda zeta: math.log(lam) + (lam - 1.0) * torch.log(zeta)


SMOOTHINGS = {"exponential": exponential_log_r0(BETA), "power": power_log_r0(BETA)}


def random_zeta(batch, n, seed=1, dtype=torch.float64):
    return torch.rand(batch, n, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def direct_log_r(log_r0, zeta, z):
    """sum_i log r(zeta_i | z_i) for binary z, branch by branch (log r(zeta|1) = log r0(1 - zeta))."""
    return torch.where(z > 0.5, log_r0(1.0 - zeta), log_r0(zeta)).sum(-1)


def brute_log_marginal(rbm, zeta, log_r0):
    """log sum_z exp(-E(z)) prod_i r(zeta_i|z_i), one state at a time (independent of the module)."""
    terms = [-rbm.energy(z) + direct_log_r(log_r0, zeta, z) for z in enumerate_states(rbm.n_units)]
    return torch.logsumexp(torch.stack(terms, -1), -1)


# ------------------------------------------------------------------------------------------------------
# Overlapping smoothing
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_augmented_energy_binary_and_relaxed(smoothing):
    log_r0 = SMOOTHINGS[smoothing]
    rbm = random_gaussian_rbm(3, 4, 0.5, seed=2)
    zeta = random_zeta(5, 7)
    z = (random_zeta(5, 7, seed=3) > 0.5).double()
    expected = rbm.energy(z) - direct_log_r(log_r0, zeta, z)
    assert torch.allclose(augmented_energy(rbm, z, zeta, log_r0), expected, rtol=0, atol=1e-12)
    # relaxed m: E_aug(m) is the expectation of E_aug(z) under the factorial Bernoulli(m)
    m = random_zeta(5, 7, seed=4)
    states = enumerate_states(7)  # [128, 7]
    q = torch.prod(torch.where(states > 0.5, m[:, None], 1 - m[:, None]), -1)  # [5, 128]
    energies = torch.stack([augmented_energy(rbm, s, zeta, log_r0) for s in states], -1)  # [5, 128]
    assert torch.allclose(augmented_energy(rbm, m, zeta, log_r0), (q * energies).sum(-1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_exact_log_marginal_matches_brute_force_and_batches(smoothing):
    log_r0 = SMOOTHINGS[smoothing]
    rbm = random_gaussian_rbm(3, 3, 1.0, seed=5)
    zeta = random_zeta(6, 6).reshape(2, 3, 6)
    exact = exact_log_marginal(rbm, zeta, log_r0)
    assert exact.shape == (2, 3) and exact.dtype == torch.float64
    assert torch.allclose(exact, brute_log_marginal(rbm, zeta, log_r0), rtol=0, atol=1e-12)


def test_exact_marginal_integrates_to_z():
    """n = 2: the integral of exp(exact_log_marginal) over (0, 1)^2 is Z (midpoint rule, 1000^2 cells)."""
    rbm = random_gaussian_rbm(1, 1, 1.0, seed=6)
    h = 1e-3
    grid = (torch.arange(1000, dtype=torch.float64) + 0.5) * h
    zeta = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    integral = torch.exp(exact_log_marginal(rbm, zeta, exponential_log_r0(BETA))).sum() * h * h
    assert abs(integral.log().item() - rbm.exact_log_z().item()) < 1e-5


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_mean_field_is_a_lower_bound_and_tight_for_weak_couplings(smoothing):
    log_r0 = SMOOTHINGS[smoothing]
    zeta = random_zeta(256, 12)
    rbm = random_gaussian_rbm(6, 6, 0.5, seed=0)
    exact = exact_log_marginal(rbm, zeta, log_r0)
    for iterations in (5, 50):  # Jensen: a bound for any m, in particular at (near) fixed points
        gap = exact - mean_field_log_marginal(rbm, zeta, log_r0, iterations)
        assert (gap >= -1e-10).all()
    # Weak couplings (std 0.1): measured gap at 5 iterations over these 256 zeta (min / mean / max)
    #   exponential beta=10: 1.6e-6 / 5.7e-4 / 4.1e-3;  power beta=10: 2.3e-3 / 7.4e-3 / 1.3e-2.
    # (std 0.5: exponential 2.5e-5 / 1.3e-2 / 0.10; power 2.9e-2 / 0.16 / 0.29; 50 iterations change it < 1e-6.)
    weak = random_gaussian_rbm(6, 6, 0.1, seed=0)
    gap = exact_log_marginal(weak, zeta, log_r0) - mean_field_log_marginal(weak, zeta, log_r0, 5)
    assert (gap >= -1e-10).all() and gap.max() < 0.02


def reference_mean_field(rbm, zeta, log_r0, iterations):
    """Independent mean field: means m* (detached) and g = -E_aug(m*, zeta) written out term by term."""
    b_zeta = (log_r0(1 - zeta) - log_r0(zeta)).detach()
    a, b, w = rbm.bias_left.detach(), rbm.bias_right.detach(), rbm.weight.detach()
    m1 = torch.full((zeta.shape[0], 6), 0.5, dtype=zeta.dtype)
    for _ in range(iterations):
        m2 = torch.sigmoid(m1 @ w + b + b_zeta[:, 6:])
        m1 = torch.sigmoid(m2 @ w.t() + a + b_zeta[:, :6])
    m = torch.cat([m1, m2], -1)
    log_r1, log_r0_ = log_r0(1 - zeta), log_r0(zeta)
    g = (m1 @ rbm.bias_left + m2 @ rbm.bias_right + torch.einsum("bi,ij,bj->b", m1, rbm.weight, m2)
         + (m * log_r1 + (1 - m) * log_r0_).sum(-1))
    entropy = -(m * m.log() + (1 - m) * (1 - m).log()).sum(-1)
    return m, g, entropy


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
@pytest.mark.parametrize("iterations", [1, 5])
def test_mean_field_value_and_gradient_match_an_independent_expression(smoothing, iterations):
    log_r0 = SMOOTHINGS[smoothing]
    rbm = random_gaussian_rbm(6, 6, 0.5, seed=7)
    params = list(rbm.parameters())
    zeta = random_zeta(16, 12, seed=8).requires_grad_()
    value = mean_field_log_marginal(rbm, zeta, log_r0, iterations)
    grads = torch.autograd.grad(value.sum(), [zeta, *params])
    _, g, entropy = reference_mean_field(rbm, zeta, log_r0, iterations)
    assert torch.allclose(value, g.detach() + entropy, rtol=0, atol=1e-10)
    expected = torch.autograd.grad(g.sum(), [zeta, *params])
    for got, want in zip(grads, expected):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-10)


def test_mean_field_gradient_is_the_bound_gradient_at_convergence():
    """Envelope theorem: with m* converged, d(bound)/dm = 0, so the returned gradient equals the gradient of
    the bound differentiated through 200 unrolled mean-field iterations."""
    log_r0 = SMOOTHINGS["exponential"]
    rbm = random_gaussian_rbm(6, 6, 0.5, seed=9)
    params = list(rbm.parameters())
    zeta = random_zeta(8, 12, seed=10).requires_grad_()
    got = torch.autograd.grad(mean_field_log_marginal(rbm, zeta, log_r0, 200).sum(), [zeta, *params])
    b_zeta = log_r0(1 - zeta) - log_r0(zeta)
    m1 = torch.full((8, 6), 0.5, dtype=torch.float64)
    for _ in range(200):
        m2 = torch.sigmoid(m1 @ rbm.weight + rbm.bias_right + b_zeta[:, 6:])
        m1 = torch.sigmoid(m2 @ rbm.weight.t() + rbm.bias_left + b_zeta[:, :6])
    m = torch.cat([m1, m2], -1)
    bound = -augmented_energy(rbm, m, zeta, log_r0) - (m * m.log() + (1 - m) * (1 - m).log()).sum(-1)
    want = torch.autograd.grad(bound.sum(), [zeta, *params])
    for x, y in zip(got, want):
        assert torch.allclose(x, y, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_mean_field_finite_at_the_edges(smoothing, dtype):
    log_r0 = SMOOTHINGS[smoothing]
    rbm = random_gaussian_rbm(6, 6, 0.5, seed=11, dtype=dtype)
    zeta = torch.where(random_zeta(4, 12, seed=12) > 0.5, 1 - 1e-6, 1e-6).to(dtype).requires_grad_()
    value = mean_field_log_marginal(rbm, zeta, log_r0)
    assert value.dtype == dtype and torch.isfinite(value).all()
    grads = torch.autograd.grad(value.sum(), [zeta, *rbm.parameters()])
    assert all(torch.isfinite(g).all() for g in grads)
    if dtype == torch.float64:  # still a lower bound of the exact marginal there
        assert (value <= exact_log_marginal(rbm, zeta.detach(), log_r0) + 1e-9).all()


def test_sharp_exponential_smoothing_recovers_the_discrete_rbm():
    """exact_log_marginal(zeta = z) - sum_i log r(z_i|z_i) = -E(z) + log(1 + sum_i e^{Delta_i - beta} + ...),
    Delta_i = change of -E when flipping unit i: the error falls like e^{-beta}; by beta = 50 the true error
    (~1e-20) is below float64 roundoff (~1e-13 here), so 50 and 200 are only checked to be at roundoff level."""
    rbm = random_gaussian_rbm(6, 6, 0.5, seed=0)
    z = (random_zeta(8, 12, seed=13) > 0.5).double()
    errors = {}
    for beta in (2.0, 5.0, 10.0, 20.0, 50.0, 200.0):
        log_r0 = exponential_log_r0(beta)
        error = exact_log_marginal(rbm, z, log_r0) - direct_log_r(log_r0, z, z) + rbm.energy(z)
        assert (error >= -1e-11).all()  # the other states only add mass
        errors[beta] = error.abs().max().item()
        if beta == 20.0:  # first-order prediction from single flips
            flips = (z[:, None, :] - torch.eye(12, dtype=torch.float64)).abs()  # [8, 12, 12]
            delta = rbm.energy(z)[:, None] - rbm.energy(flips)
            predicted = torch.log1p(torch.exp(delta - beta).sum(-1))
            assert torch.allclose(error, predicted, rtol=1e-3, atol=0)
    betas = sorted(errors)
    assert all(errors[b1] > errors[b2] for b1, b2 in zip(betas[:4], betas[1:5]))  # 2 > 5 > 10 > 20 > 50
    assert errors[20.0] < 1e-6 and errors[50.0] < 1e-11 and errors[200.0] < 1e-11


# ------------------------------------------------------------------------------------------------------
# Gaussian integral trick
# ------------------------------------------------------------------------------------------------------
def full_precision(rbm, lam):
    w = rbm.weight
    n1, n2 = w.shape
    top = torch.cat([torch.zeros(n1, n1, dtype=w.dtype), w], 1)
    bottom = torch.cat([w.t(), torch.zeros(n2, n2, dtype=w.dtype)], 1)
    return torch.cat([top, bottom], 0) + lam * torch.eye(n1 + n2, dtype=w.dtype)


@pytest.mark.parametrize("lam_choice", ["heuristic", "tight"])
def test_gaussian_integral_density_normalises(lam_choice):
    """n = 2: exp(log marginal - log Z) integrates to 1 over R^2 (rectangle rule on [-6, 7]^2, h = 0.01)."""
    rbm = random_gaussian_rbm(1, 1, 1.0, seed=14)
    lam = gaussian_integral_lambda(rbm, 1.0) if lam_choice == "heuristic" else abs(rbm.weight.item()) + 0.5
    h = 0.01
    grid = torch.arange(-6.0, 7.0, h, dtype=torch.float64)
    zeta = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    log_density = gaussian_integral_log_marginal(rbm, zeta, lam) - rbm.exact_log_z()
    assert abs(torch.exp(log_density).sum().item() * h * h - 1.0) < 1e-6


def test_gaussian_integral_matches_brute_force_mixture():
    rbm = random_gaussian_rbm(3, 3, 1.0, seed=15)
    params = list(rbm.parameters())
    lam = gaussian_integral_lambda(rbm, 2.0)
    zeta = (random_zeta(10, 6, seed=16) * 3 - 1).requires_grad_()
    value = gaussian_integral_log_marginal(rbm, zeta, lam)
    precision = full_precision(rbm, lam)
    terms = [-rbm.energy(z) + torch.distributions.MultivariateNormal(z, precision_matrix=precision).log_prob(zeta)
             for z in enumerate_states(6)]
    brute = torch.logsumexp(torch.stack(terms, -1), -1)
    assert torch.allclose(value, brute, rtol=0, atol=1e-10)
    for got, want in zip(torch.autograd.grad(value.sum(), [zeta, *params]),
                         torch.autograd.grad(brute.sum(), [zeta, *params])):
        assert torch.allclose(got, want, rtol=1e-8, atol=1e-10)
    # log det A agrees with the reference's Schur-complement form n log lam + log det(I - W^T W / lam^2)
    schur = torch.eye(3, dtype=torch.float64) - rbm.weight.t() @ rbm.weight / lam**2
    assert torch.allclose(torch.logdet(precision), 6 * math.log(lam) + torch.logdet(schur), atol=1e-12)
    assert gaussian_integral_log_marginal(rbm, zeta.detach().reshape(2, 5, 6), lam).shape == (2, 5)


def test_gaussian_integral_lambda_makes_a_positive_definite():
    rbm = random_gaussian_rbm(4, 5, 10.0, seed=17)  # large couplings
    lam = gaussian_integral_lambda(rbm, 1.0)
    top_singular = torch.linalg.svdvals(rbm.weight.detach())[0].item()
    assert lam >= 1.0 and lam == pytest.approx(5.0 + top_singular, rel=1e-10)  # spectrum of W_full is +-sigma
    torch.linalg.cholesky(full_precision(rbm, lam))  # raises if not PD
    assert torch.linalg.eigvalsh(full_precision(rbm, lam)).min() > 4.99
    assert torch.isfinite(gaussian_integral_log_marginal(rbm, random_zeta(3, 9), lam)).all()
    assert gaussian_integral_lambda(rbm, 100.0) == 100.0  # the minimum wins when it is larger
    weak = random_gaussian_rbm(4, 5, 0.01, seed=17)
    assert gaussian_integral_lambda(weak, 10.0) == 10.0

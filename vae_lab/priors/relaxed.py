"""Continuous relaxations of an RBM prior (DVAE#, Vahdat, Andriyash & Macready, NeurIPS 2018).

The discrete prior p(z) = exp(-E(z)) / Z over z in {0, 1}^n (n = n_left + n_right) with

    E(z) = -a^T z_left - b^T z_right - z_left^T W z_right

is turned into a density over continuous zeta by a factorial smoothing kernel r(zeta | z):

    p(zeta) = sum_z p(z) prod_i r(zeta_i | z_i).

Two ways of evaluating log p(zeta) + log Z are provided:

* Overlapping smoothing (DVAE# sec. 3.1): any elementwise r(zeta | z) with the symmetry
  r(zeta | 1) = r(1 - zeta | 0), given by its log-density at z = 0 (`LogR0`). Then
  prod_i r(zeta_i | z_i) = exp(b_zeta^T z + sum_i c_zeta_i) with b_zeta = log r(zeta|1) - log r(zeta|0) and
  c_zeta = log r(zeta|0), so the summand is an "augmented" RBM whose biases are shifted by b_zeta.
  Its log partition function is bounded below by mean field (`mean_field_log_marginal`) or computed
  exactly by enumeration for small n (`exact_log_marginal`).
* Gaussian integral trick (DVAE# sec. 3.2): r(zeta | z) = N(zeta; z, A^-1) with A = W_full + lam I, for
  which the sum over z factorises and log p(zeta) + log Z has a closed form
  (`gaussian_integral_log_marginal`).

No Lightning / Hydra dependency.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from vae_lab.priors.boltzmann import RBM, enumerate_states

LogR0 = Callable[[Tensor], Tensor]
"""Elementwise log r(zeta | z = 0); by symmetry log r(zeta | z = 1) = log_r0(1 - zeta)."""

__all__ = ["LogR0", "augmented_energy", "exact_log_marginal", "gaussian_integral_lambda",
           "gaussian_integral_log_marginal", "mean_field_log_marginal"]


# --------------------------------------------------------------------------------------------------
# Overlapping smoothing: the augmented RBM
# --------------------------------------------------------------------------------------------------
def _smoothing_terms(zeta: Tensor, log_r0: LogR0) -> tuple[Tensor, Tensor]:
    """(b_zeta, c_zeta) = (log r(zeta|1) - log r(zeta|0), log r(zeta|0)), both [..., n]."""
    log_r_zero = log_r0(zeta)
    log_r_one = log_r0(1.0 - zeta)
    return log_r_one - log_r_zero, log_r_zero


def augmented_energy(rbm: RBM, z: Tensor, zeta: Tensor, log_r0: LogR0) -> Tensor:
    """Energy of the augmented Boltzmann machine over (z, zeta), [...].

        E_aug(z, zeta) = E(z) - sum_i log r(zeta_i | z_i)
                       = E(z) - sum_i [z_i (log r(zeta_i|1) - log r(zeta_i|0)) + log r(zeta_i|0)].

    The second form is linear in each z_i, so it also serves relaxed / mean-field z in [0, 1]^n, where
    it equals the expectation of E_aug under the factorial Bernoulli(z). z and zeta are [..., n]
    (broadcastable), n = n_left + n_right.
    """
    b_zeta, c_zeta = _smoothing_terms(zeta, log_r0)  # [..., n] each
    return rbm.energy(z) - (z * b_zeta + c_zeta).sum(-1)


def _mean_field_fixed_point(rbm: RBM, b_zeta: Tensor, num_iterations: int) -> Tensor:
    """Mean-field means m [..., n] of the augmented RBM, detached.

    Biases (a + b_zeta_left, b + b_zeta_right); m starts at 0.5 and each iteration sets
    m_right = sigmoid(b' + m_left W), then m_left = sigmoid(a' + W m_right) (block coordinate ascent
    on the mean-field bound, so the bound never decreases).
    """
    with torch.no_grad():
        b_zeta_left, b_zeta_right = rbm.split(b_zeta)  # [..., n_left], [..., n_right]
        bias_left = rbm.bias_left + b_zeta_left
        bias_right = rbm.bias_right + b_zeta_right
        weight = rbm.weight
        m_left = torch.full_like(bias_left, 0.5)
        m_right = torch.full_like(bias_right, 0.5)
        for _ in range(num_iterations):
            m_right = torch.sigmoid(m_left @ weight + bias_right)
            m_left = torch.sigmoid(m_right @ weight.t() + bias_left)
        return torch.cat([m_left, m_right], -1)


def _bernoulli_entropy(m: Tensor) -> Tensor:
    """H(m) = -sum_i [m_i log m_i + (1 - m_i) log(1 - m_i)] with 0 log 0 = 0, [...]."""
    return -(torch.special.xlogy(m, m) + torch.special.xlogy(1.0 - m, 1.0 - m)).sum(-1)


def mean_field_log_marginal(rbm: RBM, zeta: Tensor, log_r0: LogR0, num_iterations: int = 5) -> Tensor:
    """Mean-field estimate of log sum_z exp(-E(z)) prod_i r(zeta_i | z_i) = log p(zeta) + log Z, [...].

    For any factorial q(z) = prod_i Bernoulli(z_i; m_i), Jensen gives

        log sum_z exp(-E_aug(z, zeta)) >= E_q[-E_aug(z, zeta)] + H(q) = -E_aug(m, zeta) + H(m),

    (E_aug is multilinear in z, so its expectation is E_aug at the means). m* is found by
    `num_iterations` alternating mean-field updates from 0.5 and detached. The returned value is the
    bound at m* (detached); its gradient w.r.t. zeta and the RBM parameters is that of
    g = -E_aug(m*, zeta) with m* held fixed, attached as g - g.detach() (zero value). At an exact fixed
    point this is the gradient of the bound itself (dBound/dm = 0 there, and H does not depend on
    zeta or the parameters).

    zeta: [..., n_left + n_right], values in (0, 1) where log_r0 is finite.
    """
    b_zeta, _ = _smoothing_terms(zeta, log_r0)
    m = _mean_field_fixed_point(rbm, b_zeta.detach(), num_iterations)  # [..., n]
    neg_energy = -augmented_energy(rbm, m, zeta, log_r0)  # [...], differentiable, m fixed
    bound = neg_energy.detach() + _bernoulli_entropy(m)
    return bound + (neg_energy - neg_energy.detach())


def exact_log_marginal(rbm: RBM, zeta: Tensor, log_r0: LogR0) -> Tensor:
    """log sum_z exp(-E(z)) prod_i r(zeta_i | z_i) by enumerating all 2^n states, float64, [...].

    = logsumexp_z [-E(z) + b_zeta^T z] + sum_i c_zeta_i. Meant for tests (n <= ~16); differentiable.
    """
    n = rbm.n_units
    if n > 20:
        raise ValueError(f"exact_log_marginal enumerates 2^{n} states; use n <= 20")
    states = enumerate_states(n, device=zeta.device)  # [S, n], float64
    a, b, w = rbm.bias_left.double(), rbm.bias_right.double(), rbm.weight.double()
    s_left, s_right = states[:, : rbm.n_left], states[:, rbm.n_left :]
    neg_energy = s_left @ a + s_right @ b + ((s_left @ w) * s_right).sum(-1)  # [S]
    b_zeta, c_zeta = _smoothing_terms(zeta.double(), log_r0)  # [..., n]
    log_terms = neg_energy + b_zeta @ states.t()  # [..., S]
    return torch.logsumexp(log_terms, dim=-1) + c_zeta.sum(-1)


# --------------------------------------------------------------------------------------------------
# Gaussian integral trick
# --------------------------------------------------------------------------------------------------
def _full_coupling(rbm: RBM, weight: Tensor) -> Tensor:
    """Symmetric W_full = [[0, W], [W^T, 0]], [n, n], so that z_left^T W z_right = 1/2 z^T W_full z."""
    top = torch.cat([weight.new_zeros(rbm.n_left, rbm.n_left), weight], 1)
    bottom = torch.cat([weight.t(), weight.new_zeros(rbm.n_right, rbm.n_right)], 1)
    return torch.cat([top, bottom], 0)


def gaussian_integral_lambda(rbm: RBM, minimum: float) -> float:
    """Diagonal shift lam = max(minimum, 5 + max(0, -lambda_min(W_full))) (from detached W).

    The eigenvalues of W_full are +-(singular values of W) (plus zeros), so lam > |lambda_min| makes
    A = W_full + lam I positive definite with smallest eigenvalue >= 5 (the DVAE# margin).
    """
    w_full = _full_coupling(rbm, rbm.weight.detach().double())
    smallest = torch.linalg.eigvalsh(w_full).min().item()
    return float(max(minimum, 5.0 + max(0.0, -smallest)))


def gaussian_integral_log_marginal(rbm: RBM, zeta: Tensor, lam: float) -> Tensor:
    """Exact log sum_z exp(-E(z)) N(zeta; z, A^-1) = log p(zeta) + log Z, with A = W_full + lam I, [...].

    Derivation: with d = [a, b] and E(z) = -d^T z - 1/2 z^T W_full z, and z_i^2 = z_i for binary z,

        -1/2 (zeta - z)^T A (zeta - z) = -1/2 zeta^T A zeta + z^T A zeta - 1/2 z^T W_full z - lam/2 sum_i z_i,

    so the quadratic coupling in z cancels against -E(z) and the sum over z factorises:

        log sum_z ... = 1/2 log det A - n/2 log 2 pi - 1/2 zeta^T A zeta
                        + sum_i softplus((A zeta)_i + d_i - lam/2).

    A must be positive definite (see `gaussian_integral_lambda`); log det A comes from a Cholesky
    factor (it raises if A is not PD). Differentiable in zeta and the RBM parameters.
    zeta: [..., n_left + n_right].
    """
    n = rbm.n_units
    eye = torch.eye(n, dtype=rbm.weight.dtype, device=rbm.weight.device)
    precision = _full_coupling(rbm, rbm.weight) + lam * eye  # A, [n, n], symmetric
    cholesky = torch.linalg.cholesky(precision)
    log_det = 2.0 * torch.log(torch.diagonal(cholesky)).sum()
    bias = torch.cat([rbm.bias_left, rbm.bias_right])  # d, [n]
    a_zeta = zeta @ precision  # A zeta (A symmetric), [..., n]
    quadratic = 0.5 * (a_zeta * zeta).sum(-1)  # [...]
    log_normaliser = 0.5 * log_det - 0.5 * n * math.log(2.0 * math.pi)
    return log_normaliser - quadratic + F.softplus(a_zeta + bias - 0.5 * lam).sum(-1)

"""Gaussian densities, shared by the posteriors and the priors (both import them from here): N(0, I),
diagonal Gaussians, their KL to N(0, I), mixtures of diagonal Gaussians, and the mutual information of
Gaussian posteriors."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from vae_lab.devices import checked_generator

_LOG_2PI = math.log(2 * math.pi)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over the last dimension."""
    return -0.5 * (z.pow(2) + _LOG_2PI).sum(-1)


def diagonal_mixture_log_prob(z: Tensor, means: Tensor, log_vars: Tensor, log_weights: Tensor,
                              chunk_size: int = 4096) -> Tensor:
    """log sum_k w_k N(z; m_k, diag exp(log_var_k)) for z ``[..., dim]`` and K components -> ``[...]``.

    The squared distances come from two matrix products (sum_d z_d^2 / s_kd^2 - 2 z_d m_kd / s_kd^2
    + m_kd^2 / s_kd^2), so memory is ``[chunk_size, K]``, not ``[n, K, dim]``. The expansion
    cancels large terms when the scales are small, so it runs in float64 (an error of ~1e-16 of
    m^2 / s^2) and returns z's dtype.
    """
    log_weights = log_weights.double()
    out = [torch.logsumexp(chunk + log_weights, dim=-1) for chunk in _component_log_probs(z, means, log_vars, chunk_size)]
    return torch.cat(out).to(z.dtype).view(z.shape[:-1])


def diagonal_component_log_probs(z: Tensor, means: Tensor, log_vars: Tensor, chunk_size: int = 4096) -> Tensor:
    """log N(z_i; m_k, diag exp(log_var_k)) of every row of z ``[n, dim]`` under each of K components -> ``[n, K]``
    (the terms of ``diagonal_mixture_log_prob``, the same float64 expansion), in z's dtype."""
    return torch.cat(list(_component_log_probs(z, means, log_vars, chunk_size))).to(z.dtype)


def _component_log_probs(z: Tensor, means: Tensor, log_vars: Tensor, chunk_size: int):
    """The float64 ``[c, K]`` component log densities of z's rows, ``chunk_size`` rows at a time."""
    dim = z.shape[-1]
    means, log_vars = means.double(), log_vars.double()
    precision = torch.exp(-log_vars)  # [K, dim]
    scaled_means = means * precision
    constant = (means * scaled_means).sum(-1) + log_vars.sum(-1) + dim * _LOG_2PI  # [K]
    for rows in z.reshape(-1, dim).double().split(chunk_size):
        squared = rows.pow(2) @ precision.T - 2.0 * rows @ scaled_means.T  # [c, K]
        yield -0.5 * (squared + constant)


def diagonal_gaussian_log_prob(z: Tensor, mean: Tensor, log_var: Tensor) -> Tensor:
    """log N(z; mean, diag exp(log_var)) summed over the last dimension, e.g. ``[k, batch, dim] -> [k, batch]``."""
    return -0.5 * (((z - mean) ** 2) * torch.exp(-log_var) + log_var + _LOG_2PI).sum(-1)


def standard_normal_kl_per_dim(mean: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mean, diag exp(log_var)) || N(0, I)) per dimension ``[batch, dim]``."""
    return 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var)


@torch.no_grad()
def gaussian_mutual_information(mean: Tensor, log_var: Tensor, chunk_size: int = 512,
                                generator: torch.Generator | None = None) -> float:
    """I(x; z) = E_x E_q(z|x)[log q(z|x) - log q(z)], for Gaussian posteriors ``[n, dim]``.

    One draw z_i ~ q(z|x_i) per example; q(z_i) = (1/n) sum_j q(z_i | x_j). Both log densities
    are taken at the same draws (He et al. 2019 use the exact entropy for the first term; the paired
    form has less variance and is exactly 0 when every x has the same posterior).
    """
    mean, log_var = mean.double(), log_var.double()
    n = mean.shape[0]
    generator = checked_generator(generator, mean, "the mutual information's draws")
    eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    z = mean + (0.5 * log_var).exp() * eps  # [n, dim]
    log_conditional = diagonal_gaussian_log_prob(z, mean, log_var)  # [n]
    uniform = torch.full((n,), -math.log(n), dtype=mean.dtype, device=mean.device)
    log_aggregate = diagonal_mixture_log_prob(z, mean, log_var, uniform, chunk_size)  # [n]
    return float((log_conditional - log_aggregate).mean())

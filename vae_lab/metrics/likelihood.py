"""Likelihood and latent-usage metrics (after Burda et al. 2016 and He et al. 2019).

- importance-weighted NLL: -log p(x) ~= -(logsumexp_i log w_i - log K), K draws from q(z|x),
  computed in chunks of draws so memory stays bounded;
- active units (Burda et al.): dimensions with Cov_x(E_q[z_d]) > threshold;
- mutual information I(x; z) under q (Hoffman & Johnson 2016), with the aggregate posterior
  q(z) approximated by the mixture of the posteriors of the evaluated examples.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from vae_lab.devices import checked_generator
from vae_lab.posteriors import GaussianPosterior, diagonal_mixture_log_prob


@torch.no_grad()
def importance_weighted_nll(model, batch, num_samples: int, chunk_size: int = 50, encoded=None) -> Tensor:
    """-log p(x) estimate per example ``[batch]`` from ``num_samples`` draws, ``chunk_size`` per decoder
    pass; ``encoded`` (``LogWeights.encoded``) spares the family encoding the batch again."""
    chunks = []
    remaining = num_samples
    while remaining > 0:
        k = min(chunk_size, remaining)
        chunks.append(model.log_weights(batch, k, encoded=encoded).total.double())  # [k, batch]
        remaining -= k
    log_weights = torch.cat(chunks, dim=0)  # [num_samples, batch]
    return -(torch.logsumexp(log_weights, dim=0) - math.log(num_samples))


def active_units(means: Tensor, threshold: float = 0.01) -> int:
    """Number of dimensions d with Var_x(E_q[z_d | x]) > threshold, from means ``[n, dim]``."""
    if means.shape[0] < 2:
        return 0
    return int((means.double().var(dim=0, unbiased=True) > threshold).sum())


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
    log_conditional = GaussianPosterior.log_prob(z, mean, log_var)  # [n]
    uniform = torch.full((n,), -math.log(n), dtype=mean.dtype, device=mean.device)
    log_aggregate = diagonal_mixture_log_prob(z, mean, log_var, uniform, chunk_size)  # [n]
    return float((log_conditional - log_aggregate).mean())


def perplexity(total_nll: float, total_units: float) -> float:
    """exp(total NLL / total predicted units), with the units counted as the family defines them."""
    return math.exp(total_nll / max(total_units, 1.0))

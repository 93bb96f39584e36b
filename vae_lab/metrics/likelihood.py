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

from vae_lab.densities import gaussian_mutual_information

__all__ = ["active_units", "gaussian_mutual_information", "importance_weighted_nll", "perplexity"]


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


def perplexity(total_nll: float, total_units: float) -> float:
    """exp(total NLL / total predicted units), with the units counted as the family defines them."""
    return math.exp(total_nll / max(total_units, 1.0))

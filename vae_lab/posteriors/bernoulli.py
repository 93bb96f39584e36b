"""Factorial Bernoulli posteriors q(z|x) = prod_d Bernoulli(z_d; sigmoid(l_d)) over binary latents."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from vae_lab.devices import checked_generator


def bernoulli_sample(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Binary z ~ Bernoulli(sigmoid(logits)) as floats of logits' dtype; not differentiable."""
    rho = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    return (rho < torch.sigmoid(logits.detach())).to(logits.dtype)


def bernoulli_log_prob(z: Tensor, logits: Tensor) -> Tensor:
    """log Bernoulli(z; sigmoid(l)) per unit.

    log q = -softplus(-l) and log(1-q) = -softplus(l), so the result is
    -softplus(-l) z - softplus(l) (1-z), exact for any l and also valid for z in [0, 1].
    """
    return -F.softplus(-logits) * z - F.softplus(logits) * (1 - z)


def bernoulli_entropy(logits: Tensor) -> Tensor:
    """Entropy of Bernoulli(sigmoid(l)) per unit.

    H = -q log q - (1-q) log(1-q) = q softplus(-l) + (1-q) softplus(l), with 1-q = sigmoid(-l);
    both terms are positive and nothing cancels, so it stays accurate for large |l|.
    """
    return (torch.sigmoid(logits) * F.softplus(-logits)
            + torch.sigmoid(-logits) * F.softplus(logits))


class BernoulliParams:
    """The logits ``[n, dim]`` of factorial Bernoulli posteriors of n examples (for a hierarchical
    posterior: each group's logits given the binary draws of the groups before it)."""

    def __init__(self, logits: Tensor):
        self.logits = logits

    def pack(self) -> Tensor:
        return self.logits

    @classmethod
    def unpack(cls, packed: Tensor) -> "BernoulliParams":
        return cls(packed)

    def means(self) -> Tensor:
        """E_q[z | x] = sigmoid(l) ``[n, dim]``."""
        return torch.sigmoid(self.logits)

    @torch.no_grad()
    def mutual_information(self, generator: torch.Generator | None = None, chunk_size: int = 1024) -> float:
        """I(x; z) = E_x E_q(z|x)[log q(z|x) - log q(z)] with q(z) = (1/n) sum_j q(z|x_j), from one draw
        z_i ~ q(z|x_i) per example. log q(z_i|x_j) for all pairs is one matmul:
        z_i . log sigmoid(l_j) + (1 - z_i) . log sigmoid(-l_j)."""
        logits = self.logits.double()
        n = logits.shape[0]
        generator = checked_generator(generator, logits, "the mutual information's draws")
        uniform = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)
        z = (uniform < torch.sigmoid(logits)).double()
        log_on, log_off = F.logsigmoid(logits), F.logsigmoid(-logits)  # [n, dim]
        log_conditional = (z * log_on + (1 - z) * log_off).sum(-1)  # [n]
        log_aggregate = []
        for rows in z.split(chunk_size):
            pairwise = rows @ log_on.T + (1 - rows) @ log_off.T  # [c, n]
            log_aggregate.append(torch.logsumexp(pairwise, dim=-1) - math.log(n))
        return float((log_conditional - torch.cat(log_aggregate)).mean())

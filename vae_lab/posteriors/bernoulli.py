"""Factorial Bernoulli posteriors q(z|x) = prod_d Bernoulli(z_d; sigmoid(l_d)) over binary latents."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


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
        logits = self.logits.double().cpu()
        n = logits.shape[0]
        z = (torch.rand(logits.shape, generator=generator, dtype=logits.dtype) < torch.sigmoid(logits)).double()
        log_on, log_off = F.logsigmoid(logits), F.logsigmoid(-logits)  # [n, dim]
        log_conditional = (z * log_on + (1 - z) * log_off).sum(-1)  # [n]
        log_aggregate = []
        for rows in z.split(chunk_size):
            pairwise = rows @ log_on.T + (1 - rows) @ log_off.T  # [c, n]
            log_aggregate.append(torch.logsumexp(pairwise, dim=-1) - math.log(n))
        return float((log_conditional - torch.cat(log_aggregate)).mean())

"""Factorial Bernoulli posteriors q(z|x) = prod_d Bernoulli(z_d; sigmoid(l_d)) over binary latents, relaxed in
training by a smoothing of vae_lab/posteriors/smoothing.py."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
    posterior: each group's logits given the binary draws of the groups before it), and the raw
    shifts ``[n, dim]`` of a relaxation with a second output per unit (the Gaussian integral's δμ)."""

    def __init__(self, logits: Tensor, shift: Tensor | None = None):
        self.logits, self.shift = logits, shift

    @classmethod
    def cat(cls, groups: list["BernoulliParams"]) -> "BernoulliParams":
        """The parameters of groups of latents side by side ``[n, sum of dims]``."""
        shifts = [g.shift for g in groups]
        return cls(torch.cat([g.logits for g in groups], dim=-1),
                   None if shifts[0] is None else torch.cat(shifts, dim=-1))

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


class BernoulliPosterior(nn.Module):
    """Factorial Bernoulli q(z|x) over binary latents, a part every family can use (``posterior=bernoulli``;
    the priors it pairs with: vae_lab/regularisers.py). In training the draws are the ``relaxation``'s
    continuous ζ (reparameterised), in evaluation binary z.

    Built with the family's ``latent_dim``; with ``in_features`` it also holds the head that maps a
    feature vector to the ``num_params`` outputs per latent (logits; and raw shifts for the Gaussian
    integral), without it the family's nets give them. The Gaussian integral's scale σ is learned per
    unit here: σ = |0.2 s| + 0.05, s from 1 (DVAE#'s reference).
    """

    kind = "bernoulli"

    def __init__(self, latent_dim: int, relaxation, in_features: int | None = None):
        super().__init__()
        self.latent_dim, self.relaxation = latent_dim, relaxation
        self.num_params = relaxation.num_params
        if in_features is not None:
            self.to_params = nn.Linear(in_features, self.num_params * latent_dim)
        if self.num_params == 2:
            self.sigma_raw = nn.Parameter(torch.ones(latent_dim))

    @property
    def row(self) -> str:
        """Its row in the regulariser table: ``bernoulli/<the relaxation's family>``."""
        return f"{self.kind}/{self.relaxation.family}"

    def forward(self, features: Tensor) -> BernoulliParams:
        """The parameters ``[batch, dim]`` from the head."""
        return self.params(self.to_params(features).view(features.shape[0], self.num_params, self.latent_dim))

    def params(self, outputs: Tensor) -> BernoulliParams:
        """The parameters from a net's outputs ``[n, num_params, dim]`` (logits first)."""
        return BernoulliParams(outputs[:, 0], outputs[:, 1] if self.num_params == 2 else None)

    def _mixture(self, params: BernoulliParams, offset: int) -> tuple[Tensor, Tensor]:
        """The Gaussian integral's σ ``[dim]`` of units offset.. and shift δμ (``params.shift``'s shape)."""
        raw = self.sigma_raw[offset:offset + params.logits.shape[-1]]
        return 0.2 * raw.abs() + 0.05, self.relaxation.shift(params.shift)

    def draw(self, params: BernoulliParams, num_samples: int = 1, relaxed: bool = True, offset: int = 0) -> Tensor:
        """``[k, n, dim]`` draws: relaxed ζ (differentiable) or binary z; ``offset``: the first unit's index
        among the posterior's (a group of a hierarchical posterior)."""
        expand = (lambda t: t.unsqueeze(0)) if num_samples == 1 else (lambda t: t.expand(num_samples, *t.shape))
        logits = expand(params.logits)
        if not relaxed:
            return bernoulli_sample(logits)
        if self.num_params == 2:
            sigma, delta_mu = self._mixture(params, offset)
            return self.relaxation.rsample(logits, sigma, expand(delta_mu))
        return self.relaxation.rsample(logits)

    def log_q(self, z: Tensor, params: BernoulliParams, relaxed: bool = True, offset: int = 0) -> Tensor:
        """log q summed over the last dimension ``[..., dim] -> [...]``: of relaxed ζ (the relaxation's
        density; the spike-and-exponential has none) or of binary z."""
        if not relaxed:
            return bernoulli_log_prob(z, params.logits).sum(-1)
        if self.num_params == 2:
            return self.relaxation.log_prob(z, params.logits, *self._mixture(params, offset)).sum(-1)
        return self.relaxation.log_prob(z, params.logits).sum(-1)

    # -- what the regulariser cells ask of the relaxation
    def log_ratio(self, zeta: Tensor) -> Tensor:
        """log r(ζ|1) - log r(ζ|0) per unit: how a relaxed draw shifts the RBM's left means (DVAE++)."""
        return self.relaxation.log_ratio(zeta)

    def smoothing_log_r0(self, zeta: Tensor) -> Tensor:
        """log r(ζ|z = 0) per unit, the overlapping smoothing's density (DVAE#'s relaxed prior)."""
        return self.relaxation.smoothing.log_pdf(zeta)

    @property
    def minimum_lambda(self) -> float:
        """The Gaussian integral's floor of the RBM prior's λ."""
        return self.relaxation.minimum_lambda

    @staticmethod
    def point(params: BernoulliParams) -> Tensor:
        """The most probable binary z ``[n, dim]``, the latent a family decodes greedily."""
        return (params.logits > 0).to(params.logits.dtype)

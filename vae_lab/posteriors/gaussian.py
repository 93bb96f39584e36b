"""Posterior distributions q(z|x) as parts shared by model families."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import Independent, Normal

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
    shape, dim = z.shape[:-1], z.shape[-1]
    flat = z.reshape(-1, dim).double()  # [n, dim]
    means, log_vars, log_weights = means.double(), log_vars.double(), log_weights.double()
    precision = torch.exp(-log_vars)  # [K, dim]
    scaled_means = means * precision
    constant = (means * scaled_means).sum(-1) + log_vars.sum(-1) + dim * _LOG_2PI  # [K]
    out = []
    for rows in flat.split(chunk_size):
        squared = rows.pow(2) @ precision.T - 2.0 * rows @ scaled_means.T  # [c, K]
        out.append(torch.logsumexp(-0.5 * (squared + constant) + log_weights, dim=-1))
    return torch.cat(out).to(z.dtype).view(shape)


class GaussianPosterior(nn.Module):
    """Diagonal Gaussian q(z|x) = N(mean, diag(exp(log_var))), a part every family can use
    (``posterior=gaussian``; the table of the priors it pairs with: vae_lab/regularisers.py).

    Built with the family's ``latent_dim``; with ``in_features`` it also holds the head that maps a
    feature vector h to (mean, log_var) (the text families), without it the family's own nets give
    the ``num_params`` outputs per latent (the image family). Draws use the reparameterisation
    z = mean + exp(log_var / 2) * eps.
    """

    kind = "gaussian"  # its row in the regulariser table
    num_params = 2

    def __init__(self, latent_dim: int, in_features: int | None = None):
        super().__init__()
        self.latent_dim = latent_dim
        if in_features is not None:
            self.to_params = nn.Linear(in_features, 2 * latent_dim)

    def forward(self, features: Tensor) -> "GaussianParams":
        """Mean and log-variance, each ``[batch, dim]``, from the head."""
        mean, log_var = self.to_params(features).chunk(2, dim=-1)
        return GaussianParams(mean, log_var)

    @property
    def row(self) -> str:
        return self.kind

    @staticmethod
    def params(outputs: Tensor) -> "GaussianParams":
        """The parameters from a net's outputs ``[n, 2, dim]`` (means first)."""
        return GaussianParams(outputs[:, 0], outputs[:, 1])

    def draw(self, params: "GaussianParams", num_samples: int = 1, relaxed: bool = True, offset: int = 0) -> Tensor:
        """``[k, n, dim]`` reparameterised draws (``relaxed`` and ``offset`` mean nothing for Gaussians)."""
        return self.rsample(params.mean, params.log_var, num_samples)

    def log_q(self, z: Tensor, params: "GaussianParams", relaxed: bool = True, offset: int = 0) -> Tensor:
        """log q(z|x) summed over the last dimension, ``[k, n, dim] -> [k, n]``."""
        return self.log_prob(z, params.mean, params.log_var)

    @staticmethod
    def point(params: "GaussianParams") -> Tensor:
        """The posterior mean ``[n, dim]``, the latent a family decodes greedily."""
        return params.mean

    @staticmethod
    def distribution(mean: Tensor, log_var: Tensor) -> Independent:
        return Independent(Normal(mean, (0.5 * log_var).exp()), 1)

    @staticmethod
    def rsample(mean: Tensor, log_var: Tensor, num_samples: int) -> Tensor:
        """Reparameterised draws ``[k, batch, dim]``."""
        eps = torch.randn((num_samples, *mean.shape), dtype=mean.dtype, device=mean.device)
        return mean + (0.5 * log_var).exp() * eps

    @staticmethod
    def log_prob(z: Tensor, mean: Tensor, log_var: Tensor) -> Tensor:
        """log q(z|x) ``[k, batch]`` for z ``[k, batch, dim]``."""
        return -0.5 * (((z - mean) ** 2) * torch.exp(-log_var) + log_var + _LOG_2PI).sum(-1)

    @staticmethod
    def kl_per_dim(mean: Tensor, log_var: Tensor) -> Tensor:
        """KL(q || N(0, I)) per dimension ``[batch, dim]``."""
        return 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var)


class GaussianParams:
    """The parameters of diagonal Gaussian posteriors of n examples, ``mean`` and ``log_var`` ``[n, dim]``:
    what a Gaussian family's ``encode`` returns for the latent-usage metrics."""

    def __init__(self, mean: Tensor, log_var: Tensor):
        self.mean, self.log_var = mean, log_var

    @classmethod
    def cat(cls, groups: list["GaussianParams"]) -> "GaussianParams":
        """The parameters of groups of latents side by side ``[n, sum of dims]``."""
        return cls(torch.cat([g.mean for g in groups], dim=-1), torch.cat([g.log_var for g in groups], dim=-1))

    def pack(self) -> Tensor:
        """One ``[n, 2 dim]`` tensor, gathered over an evaluation epoch."""
        return torch.cat([self.mean, self.log_var], dim=-1)

    @classmethod
    def unpack(cls, packed: Tensor) -> "GaussianParams":
        return cls(*packed.chunk(2, dim=-1))

    def means(self) -> Tensor:
        """E_q[z | x] ``[n, dim]``."""
        return self.mean

    def mutual_information(self, generator: torch.Generator | None = None) -> float:
        return gaussian_mutual_information(self.mean, self.log_var, generator=generator)


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

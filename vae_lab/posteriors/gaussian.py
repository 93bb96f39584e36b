"""The diagonal Gaussian posterior q(z|x), a part every family can use."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import Independent, Normal

from vae_lab.densities import diagonal_gaussian_log_prob, gaussian_mutual_information, standard_normal_kl_per_dim
from vae_lab.errors import ConfigError


class GaussianPosterior(nn.Module):
    """Diagonal Gaussian q(z|x) = N(mean, diag(exp(log_var))), a part every family can use
    (``posterior=gaussian``; the table of the priors it pairs with: vae_lab/regularisers.py).

    Built with the family's ``latent_dim``; with ``in_features`` it also holds the head that maps a
    feature vector h to (mean, log_var) (the text families), without it the family's own nets give
    the ``num_params`` outputs per latent (the image family). Draws use the reparameterisation
    z = mean + exp(log_var / 2) * eps.

    ``batch_norm_scale`` γ (BN-VAE, Zhu et al. 2020): the means pass through batch normalisation with
    the fixed scale γ and a learned shift, mean_d = γ (μ_d - E_batch μ_d) / sd_batch(μ_d) + b_d. Over a
    training batch, E KL(q || N(0, I)) >= Σ_d E[mean_d²] / 2 >= n γ² / 2, so the training KL cannot collapse
    below n γ² / 2 nats (5.8 for 32 latents at γ = 0.6). Evaluation normalises with the running statistics,
    so the floor does not bind there: the eval-mode means can vary less than the running variance says
    (tests/test_collapse_remedies.py: test KL 1.00 against a floor of 1.44). null: off.
    """

    kind = "gaussian"  # its row in the regulariser table
    num_params = 2

    def __init__(self, latent_dim: int, in_features: int | None = None, batch_norm_scale: float | None = None):
        super().__init__()
        self.latent_dim = latent_dim
        if in_features is not None:
            self.to_params = nn.Linear(in_features, 2 * latent_dim)
        self.batch_norm_scale = batch_norm_scale
        if batch_norm_scale is not None:
            if batch_norm_scale <= 0:
                raise ConfigError(f"posterior.batch_norm_scale={batch_norm_scale}: give a scale > 0 (BN-VAE's "
                                  "gamma, e.g. 0.6), or null for no batch norm on the means")
            self.mean_norm = nn.BatchNorm1d(latent_dim, affine=False)
            self.mean_shift = nn.Parameter(torch.zeros(latent_dim))

    def _normalised(self, mean: Tensor) -> Tensor:
        """BN-VAE's means ``[n, dim]`` (the means as they are without ``batch_norm_scale``)."""
        if self.batch_norm_scale is None:
            return mean
        return self.batch_norm_scale * self.mean_norm(mean) + self.mean_shift

    def forward(self, features: Tensor) -> "GaussianParams":
        """Mean and log-variance, each ``[batch, dim]``, from the head."""
        mean, log_var = self.to_params(features).chunk(2, dim=-1)
        return GaussianParams(self._normalised(mean), log_var)

    @property
    def row(self) -> str:
        return self.kind

    def params(self, outputs: Tensor) -> "GaussianParams":
        """The parameters from a net's outputs ``[n, 2, dim]`` (means first)."""
        return GaussianParams(self._normalised(outputs[:, 0]), outputs[:, 1])

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
        return diagonal_gaussian_log_prob(z, mean, log_var)

    @staticmethod
    def kl_per_dim(mean: Tensor, log_var: Tensor) -> Tensor:
        """KL(q || N(0, I)) per dimension ``[batch, dim]``."""
        return standard_normal_kl_per_dim(mean, log_var)


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

"""The uniform prior over a VQ-VAE's codes: p(z) = K^-positions for z made of ``positions`` of the
posterior's K codes (van den Oord et al. 2017 train it so, then fit an autoregressive prior). Its draws
are codes picked uniformly, looked up in the posterior's codebook (the posterior's ``lookup``, reached at
``attach``)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vae_lab.devices import draw_device
from vae_lab.errors import ConfigError
from vae_lab.priors.base import Prior


class UniformCodesPrior(Prior):
    """p(z) = K^-positions, positions = ``latent_dim / code_dim``, K = ``codebook_size`` (the posterior's)."""

    support = "codes"

    def __init__(self, latent_dim: int, codebook_size: int = 32, code_dim: int = 10):
        super().__init__()
        if code_dim < 1 or latent_dim % code_dim or codebook_size < 2:
            raise ConfigError(f"prior=codes: {latent_dim} latents in positions of {code_dim} with {codebook_size} "
                              "codes do not fit; set them as posterior.code_dim and posterior.codebook_size")
        self.latent_dim, self.codebook_size, self.positions = latent_dim, codebook_size, latent_dim // code_dim
        self._lookup = None

    def attach(self, model: nn.Module) -> None:
        """Keep the posterior's codebook lookup, to decode the prior's draws."""
        self._lookup = model.posterior.lookup

    def log_prob(self, z: Tensor) -> Tensor:
        """-positions · log K for every z of codes ``[..., dim] -> [...]``."""
        return torch.full(z.shape[:-1], -self.positions * math.log(self.codebook_size), dtype=z.dtype, device=z.device)

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """``[num_samples, dim]``: a code drawn uniformly at each position, looked up in the codebook."""
        device = draw_device(self, generator, "UniformCodesPrior.sample")
        index = torch.randint(self.codebook_size, (num_samples, self.positions), generator=generator, device=device)
        return self._lookup(index)

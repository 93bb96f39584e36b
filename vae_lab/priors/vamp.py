"""The VampPrior (Tomczak & Welling 2018, "VAE with a VampPrior"): p(z) = (1/K) Σ_k q(z | u_k), the mixture
of the encoder's own posteriors at K learned pseudo-inputs u_k.

It is the aggregate posterior with learned stand-ins for the training data, so it is learned with the
model (through the Monte Carlo KL log q(z|x) - log p(z)) instead of fitted before evaluation. The prior
binds to the model it serves (``attach``): the model says the shape of one input (``input_shape()``) and
encodes the pseudo-inputs (``encode_inputs``; the image family encodes them with its batch norm's
running statistics, so they never enter the data's batch statistics). The pseudo-inputs live in the
data's range [0, 1] (a hard tanh of free parameters, started at N(init_mean, init_std²) as Tomczak &
Welling's MNIST code).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vae_lab.densities import diagonal_mixture_log_prob
from vae_lab.devices import draw_device, generator_on
from vae_lab.errors import ConfigError
from vae_lab.priors.base import Prior


class VampPrior(Prior):
    """p(z) = (1/K) Σ_k q(z | u_k) with K = ``components`` learned pseudo-inputs (module docstring)."""

    requires = frozenset({"encode_inputs", "input_shape"})

    def __init__(self, latent_dim: int, components: int = 500, init_mean: float = 0.05, init_std: float = 0.01,
                 seed: int = 0):
        super().__init__()
        if components < 1:
            raise ConfigError(f"prior.components={components}: must be >= 1")
        self.latent_dim, self.num_components = latent_dim, components
        self.init_mean, self.init_std, self.seed = init_mean, init_std, seed
        self._encode: Callable[[Tensor], object] | None = None

    def attach(self, model: nn.Module) -> None:
        """Create the pseudo-inputs in the shape of the model's inputs and keep its encoder."""
        shape = tuple(model.input_shape())
        generator = generator_on("cpu", self.seed)  # they start on the host and move with the model
        start = self.init_mean + self.init_std * torch.randn(self.num_components, *shape, generator=generator)
        self.raw_inputs = nn.Parameter(start)
        self._encode = model.encode_inputs

    def pseudo_inputs(self) -> Tensor:
        """u ``[K, *input_shape]`` in [0, 1]."""
        return F.hardtanh(self.raw_inputs, 0.0, 1.0)

    def components(self):
        """The posteriors at the pseudo-inputs (``GaussianParams`` ``[K, dim]``)."""
        if self._encode is None:
            raise RuntimeError("VampPrior: attach(model) first (the model's _build_prior does it)")
        return self._encode(self.pseudo_inputs())

    def log_prob(self, z: Tensor) -> Tensor:
        """log (1/K) Σ_k N(z; μ_k, diag σ_k²) over the last dimension: ``[..., dim]`` -> ``[...]``."""
        params = self.components()
        uniform = torch.full((self.num_components,), -math.log(self.num_components), device=z.device, dtype=z.dtype)
        return diagonal_mixture_log_prob(z, params.mean, params.log_var, uniform)

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """``[num_samples, dim]`` draws: a pseudo-input uniformly, then its posterior (on the prior's device)."""
        device = draw_device(self, generator, "VampPrior.sample")
        params = self.components()
        index = torch.randint(self.num_components, (num_samples,), generator=generator, device=device)
        noise = torch.randn(num_samples, self.latent_dim, generator=generator, device=device)
        return params.mean[index] + (0.5 * params.log_var[index]).exp() * noise

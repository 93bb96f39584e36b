"""The uniform prior over one-hot categorical latents: p(z) = Π_v 1/C over ``latent_dim / classes``
variables of ``classes`` classes (Jang et al. 2017's categorical VAE). In training the posterior's
Gumbel-softmax draws are scored by the relaxed prior, the Concrete distribution with uniform logits at
the posterior's temperature (``relaxed_log_prob``, for the IW bound; the ELBO uses the exact KL)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from vae_lab.devices import draw_device
from vae_lab.errors import ConfigError
from vae_lab.posteriors.categorical import concrete_log_prob
from vae_lab.priors.base import Prior


class UniformCategoricalPrior(Prior):
    """p(z) = C^-V for one-hot z of V = ``latent_dim / classes`` variables."""

    support = "categorical"
    offers = frozenset({"relaxed_log_prob"})

    def __init__(self, latent_dim: int, classes: int = 10):
        super().__init__()
        if classes < 2 or latent_dim % classes:
            raise ConfigError(f"prior.classes={classes}: the model's {latent_dim} latents must split into "
                              "variables of at least 2 classes (set it as posterior.classes)")
        self.latent_dim, self.classes, self.variables = latent_dim, classes, latent_dim // classes

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z) = -V log C of one-hot z ``[..., dim] -> [...]``."""
        return torch.full(z.shape[:-1], -self.variables * math.log(self.classes), dtype=z.dtype, device=z.device)

    def relaxed_log_prob(self, y: Tensor, temperature: float) -> Tensor:
        """The Concrete log density with uniform logits at ``temperature`` of relaxed y ``[..., dim] -> [...]``."""
        grouped = y.view(*y.shape[:-1], -1, self.classes)
        return concrete_log_prob(grouped, torch.zeros_like(grouped), temperature).sum(-1)

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """``[num_samples, dim]`` one-hot draws, uniform over each variable's classes."""
        device = draw_device(self, generator, "UniformCategoricalPrior.sample")
        index = torch.randint(self.classes, (num_samples, self.variables), generator=generator, device=device)
        return F.one_hot(index, self.classes).float().flatten(-2)

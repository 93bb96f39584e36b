"""Continuous priors p(z) for Gaussian-latent families: N(0, I), a learned mixture, the aggregate posterior.

For a trained encoder the prior that maximises the average ELBO over the training data is the
aggregate posterior q(z) = (1/N) sum_n q(z|x_n), since
E_x KL(q(z|x) || p(z)) = I_q(x; z) + KL(q(z) || p(z)) (Hoffman & Johnson 2016, "ELBO surgery";
Tomczak & Welling 2018, "VAE with a VampPrior", who also note it overfits as a training prior).
A fixed N(0, I) leaves holes where q(z) has no mass, and draws from them decode to data the
model never saw (for the verb CVAE: consistent but invented verbs).

- ``StandardNormalPrior``: N(0, I), analytic KL.
- ``MixturePrior``: K diagonal Gaussians whose weights, means and scales are learned with the model
  through the KL term (estimated from the posterior draws, log q(z|x) - log p(z)).
- ``AggregatePosteriorPrior``: a two-stage prior. The model trains against N(0, I); before every
  evaluation the prior is set to the aggregate posterior of K training items (their q(z|x_n) as
  equal-weight mixture components; VampPrior with training inputs as pseudo-inputs), and the
  evaluation's ELBO, KL, NLL and prior draws use it. Its components are buffers, so checkpoints carry
  the prior they were evaluated with.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vae_lab.devices import draw_device, generator_on
from vae_lab.errors import ConfigError
from vae_lab.densities import diagonal_mixture_log_prob, standard_normal_log_prob
from vae_lab.priors.base import Prior


class StandardNormalPrior(Prior):
    """p(z) = N(0, I); its KL to a diagonal Gaussian posterior is analytic (``analytic_kl``)."""

    analytic_kl = True
    is_standard_normal = True

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z) over the last dimension: ``[..., dim]`` -> ``[...]``."""
        return standard_normal_log_prob(z)

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """``[num_samples, dim]`` draws, on the generator's device (it has no tensors of its own)."""
        device = draw_device(self, generator, "StandardNormalPrior.sample")
        return torch.randn(num_samples, self.latent_dim, generator=generator, device=device)


class MixturePrior(Prior):
    """p(z) = sum_k pi_k N(z; m_k, diag s_k^2), K components with learned pi, m, s.

    Initialised at pi uniform, m_k ~ N(0, I), s_k = 1, so it starts close to a widened N(0, I).
    ``min_scale`` keeps the components from shrinking onto single posterior means.
    """

    analytic_kl = False

    def __init__(self, latent_dim: int, components: int = 512, min_scale: float = 1e-2, seed: int = 0):
        super().__init__()
        if components < 1:
            raise ConfigError(f"prior.components={components}: must be >= 1")
        self.latent_dim, self.min_scale = latent_dim, min_scale
        generator = generator_on("cpu", seed)  # parameters start on the host and move with the model
        self.means = nn.Parameter(torch.randn(components, latent_dim, generator=generator))
        self.raw_scales = nn.Parameter(torch.zeros(components, latent_dim))
        self.logits = nn.Parameter(torch.zeros(components))

    @property
    def scales(self) -> Tensor:
        """Component standard deviations ``[K, dim]``: 1 at initialisation, never below ``min_scale``."""
        return self.min_scale + (1.0 - self.min_scale) * self.raw_scales.exp()

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z) over the last dimension: ``[..., dim]`` -> ``[...]``."""
        return diagonal_mixture_log_prob(z, self.means, 2.0 * self.scales.log(), self.logits.log_softmax(0))

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """``[num_samples, dim]`` draws: a component by its weight, then its Gaussian (on the prior's device)."""
        device = draw_device(self, generator, "MixturePrior.sample")
        with torch.no_grad():
            weights = self.logits.detach().softmax(0)
            index = torch.multinomial(weights, num_samples, replacement=True, generator=generator)
            noise = torch.randn(num_samples, self.latent_dim, generator=generator, device=device)
            return self.means.detach()[index] + self.scales.detach()[index] * noise


class AggregatePosteriorPrior(Prior):
    """p(z) = a N(0, I) + (1 - a) (1/K) sum_k q(z | x_k) over K training items, set by ``fit``
    (N(0, I) until then); a = ``normal_weight``.

    a = 0 is the aggregate posterior itself. It is the best prior for the training data but
    overfits: held-out items whose posteriors fall between the training ones pay a large KL. A
    share a of N(0, I) (a defensive mixture) bounds that cost: log p(z) >= log a + log N(z; 0, I),
    so the NLL is never more than -log a nats above the model's with N(0, I), while a share 1 - a
    of the draws still comes from q(z). The two stages follow the module's mode: in training mode,
    and in any mode before the first ``fit``, the prior is N(0, I) (``analytic_kl`` True); in eval
    mode once fitted, it is the mixture. Before each evaluation (``prepare_evaluation``) it fits
    itself to the posteriors of ``components`` training items that the model encodes
    (``model.training_posteriors``; a fixed random subset, drawn with replacement when there are fewer).
    """

    def __init__(self, latent_dim: int, components: int = 4096, normal_weight: float = 0.0):
        super().__init__()
        if components < 1:
            raise ConfigError(f"prior.components={components}: must be >= 1")
        if not 0.0 <= normal_weight < 1.0:
            raise ConfigError(f"prior.normal_weight={normal_weight}: must lie in [0, 1)")
        self.latent_dim, self.normal_weight = latent_dim, normal_weight
        self.register_buffer("means", torch.zeros(components, latent_dim))
        self.register_buffer("log_vars", torch.zeros(components, latent_dim))
        self.register_buffer("fitted", torch.tensor(False))

    @property
    def components(self) -> int:
        return self.means.shape[0]

    @property
    def analytic_kl(self) -> bool:
        """True while the prior is N(0, I): in training mode, or not yet fitted."""
        return self.training or not bool(self.fitted)

    @property
    def is_standard_normal(self) -> bool:
        return self.analytic_kl

    @torch.no_grad()
    def prepare_evaluation(self, model: nn.Module, datamodule) -> None:
        """Fit to the posteriors of ``components`` training items (the same ones every time)."""
        params = model.training_posteriors(datamodule, self.components, generator_on("cpu", 0))  # indices of host items
        self.fit(params.mean, params.log_var)

    @torch.no_grad()
    def fit(self, means: Tensor, log_vars: Tensor) -> None:
        """Take ``[K, dim]`` posterior means and log-variances as the components."""
        if means.shape != self.means.shape or log_vars.shape != self.log_vars.shape:
            raise ValueError(f"fit: expected [{self.components}, {self.latent_dim}] posteriors, got "
                             f"{list(means.shape)} and {list(log_vars.shape)}")
        self.means.copy_(means)
        self.log_vars.copy_(log_vars)
        self.fitted.fill_(True)

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z) over the last dimension: ``[..., dim]`` -> ``[...]``."""
        if self.analytic_kl:
            return standard_normal_log_prob(z)
        weight = -math.log(self.components) + math.log1p(-self.normal_weight)
        uniform = torch.full((self.components,), weight, device=z.device, dtype=z.dtype)
        aggregate = diagonal_mixture_log_prob(z, self.means, self.log_vars, uniform)
        if self.normal_weight == 0.0:
            return aggregate
        normal = standard_normal_log_prob(z) + math.log(self.normal_weight)
        return torch.logaddexp(aggregate, normal)

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """``[num_samples, dim]`` draws on the prior's device: N(0, I) with probability ``normal_weight``,
        else a training item uniformly and then its posterior (N(0, I) alone while ``analytic_kl``)."""
        device = draw_device(self, generator, "AggregatePosteriorPrior.sample")
        if self.analytic_kl:
            return torch.randn(num_samples, self.latent_dim, generator=generator, device=device)
        index = torch.randint(self.components, (num_samples,), generator=generator, device=device)
        noise = torch.randn(num_samples, self.latent_dim, generator=generator, device=device)
        normal = torch.rand(num_samples, generator=generator, device=device) < self.normal_weight
        means, log_vars = self.means.detach(), self.log_vars.detach()
        draws = means[index] + (0.5 * log_vars[index]).exp() * noise
        return torch.where(normal[:, None], noise, draws)

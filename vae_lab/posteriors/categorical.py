"""Categorical posteriors q(z|x) = Π_v Cat(z_v; softmax(l_v)) over groups of one-hot latents, relaxed in
training by the Gumbel-softmax / Concrete distribution (Jang, Gu & Poole 2017; Maddison, Mnih & Teh 2017).

The family's latents are ``variables × classes`` units side by side (variable v owns units
v·C .. v·C + C - 1). In training a draw is y_v = softmax((l_v + g_v) / τ) with Gumbel noise g (or, with
``straight_through``, the one-hot argmax in the forward pass and y_v's gradient); in evaluation z_v is a
one-hot draw of Cat(softmax(l_v)). Densities: of one-hot z, Σ_v log softmax(l_v)[z_v]; of relaxed y,
the Concrete density (Maddison et al. 2017, eq. 9), in log space:

    log p_τ(y | l) = log (C - 1)! + (C - 1) log τ + Σ_c (l_c - (τ + 1) log y_c) - C logsumexp_c (l_c - τ log y_c).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vae_lab.devices import checked_generator
from vae_lab.errors import ConfigError

_TINY = 1e-30  # the floor of a relaxed draw's coordinates under the log


def concrete_log_prob(y: Tensor, logits: Tensor, temperature: float) -> Tensor:
    """The Concrete log density of relaxed one-hots ``y [..., variables, classes]`` for ``logits`` of the same
    shape (broadcast) at ``temperature`` -> ``[..., variables]``."""
    classes = y.shape[-1]
    log_y = y.clamp_min(_TINY).log()
    constant = math.lgamma(classes) + (classes - 1) * math.log(temperature)
    return (constant + (logits - (temperature + 1.0) * log_y).sum(-1)
            - classes * torch.logsumexp(logits - temperature * log_y, dim=-1))


class CategoricalParams:
    """The logits ``[n, variables · classes]`` of n examples' categorical posteriors (``classes`` a variable)."""

    def __init__(self, logits: Tensor, classes: int):
        self.logits, self.classes = logits, classes

    def grouped(self) -> Tensor:
        """``[n, variables, classes]``."""
        return self.logits.view(*self.logits.shape[:-1], -1, self.classes)

    @classmethod
    def cat(cls, groups: list["CategoricalParams"]) -> "CategoricalParams":
        return cls(torch.cat([g.logits for g in groups], dim=-1), groups[0].classes)

    def pack(self) -> Tensor:
        return self.logits

    def unpack(self, packed: Tensor) -> "CategoricalParams":
        return CategoricalParams(packed, self.classes)

    def means(self) -> Tensor:
        """E_q[z | x]: the class probabilities ``[n, variables · classes]``."""
        return self.grouped().softmax(-1).flatten(-2)

    @torch.no_grad()
    def mutual_information(self, generator: torch.Generator | None = None, chunk_size: int = 1024) -> float:
        """I(x; z) = E_x E_q(z|x)[log q(z|x) - log q(z)], q(z) = (1/n) Σ_j q(z|x_j), from one one-hot draw per
        example; log q(z_i|x_j) for all pairs is one matmul of the one-hots with the log-probabilities."""
        log_probs = self.grouped().double().log_softmax(-1)  # [n, variables, classes]
        n = log_probs.shape[0]
        generator = checked_generator(generator, log_probs, "the mutual information's draws")
        gumbel = -torch.log(-torch.log(torch.rand(log_probs.shape, generator=generator, dtype=log_probs.dtype,
                                                  device=log_probs.device).clamp_min(1e-300)))
        one_hot = F.one_hot((log_probs + gumbel).argmax(-1), self.classes).double().flatten(1)  # [n, V C]
        flat = log_probs.flatten(1)
        log_conditional = (one_hot * flat).sum(-1)
        log_aggregate = torch.cat([torch.logsumexp(rows @ flat.T, dim=-1) - math.log(n)
                                   for rows in one_hot.split(chunk_size)])
        return float((log_conditional - log_aggregate).mean())


class CategoricalPosterior(nn.Module):
    """Categorical q(z|x) over ``latent_dim / classes`` one-hot variables, Gumbel-softmax relaxed in training
    (``posterior=categorical``; its prior: ``prior=categorical``, vae_lab/priors/categorical.py).

    Built with the family's ``latent_dim`` (a multiple of ``classes``); with ``in_features`` it holds the head
    that maps a feature vector to the logits (the text families), without it the family's nets give them.
    ``temperature`` τ of the relaxation; ``straight_through``: one-hot draws forward, relaxed gradients back.
    """

    kind = "categorical"  # its row in the regulariser table
    num_params = 1

    def __init__(self, latent_dim: int, classes: int = 10, temperature: float = 1.0, straight_through: bool = False,
                 in_features: int | None = None):
        super().__init__()
        if classes < 2 or latent_dim % classes:
            raise ConfigError(f"posterior.classes={classes}: the model's {latent_dim} latents must split into "
                              "variables of at least 2 classes; pick classes dividing the latent count")
        if temperature <= 0:
            raise ConfigError(f"posterior.temperature={temperature}: must be > 0")
        self.latent_dim, self.classes = latent_dim, classes
        self.variables = latent_dim // classes
        self.temperature, self.straight_through = float(temperature), straight_through
        if in_features is not None:
            self.to_params = nn.Linear(in_features, latent_dim)

    @property
    def row(self) -> str:
        return self.kind

    def forward(self, features: Tensor) -> CategoricalParams:
        return CategoricalParams(self.to_params(features), self.classes)

    def params(self, outputs: Tensor) -> CategoricalParams:
        """The logits from a net's outputs ``[n, 1, dim]``."""
        return CategoricalParams(outputs[:, 0], self.classes)

    def draw(self, params: CategoricalParams, num_samples: int = 1, relaxed: bool = True, offset: int = 0) -> Tensor:
        """``[k, n, dim]`` draws: relaxed y (differentiable; one-hot forward with ``straight_through``) or one-hot z."""
        logits = params.grouped().unsqueeze(0).expand(num_samples, *params.grouped().shape)  # [k, n, V, C]
        uniform = torch.rand(logits.shape, dtype=logits.dtype, device=logits.device)
        gumbel = -torch.log(-torch.log(uniform.clamp(1e-20, 1.0 - 1e-7)))
        if not relaxed:
            return F.one_hot((logits.detach() + gumbel).argmax(-1), self.classes).to(logits.dtype).flatten(-2)
        soft = ((logits + gumbel) / self.temperature).softmax(-1)
        if self.straight_through:
            hard = F.one_hot(soft.argmax(-1), self.classes).to(soft.dtype)
            soft = hard + (soft - soft.detach())  # exactly one-hot forward, the relaxed gradient back
        return soft.flatten(-2)

    def log_q(self, z: Tensor, params: CategoricalParams, relaxed: bool = True, offset: int = 0) -> Tensor:
        """log q summed over the variables ``[..., dim] -> [...]``: the Concrete density of relaxed y, or the
        categorical probability of one-hot z."""
        grouped = z.view(*z.shape[:-1], -1, self.classes)
        logits = params.grouped()
        if not relaxed:
            return (grouped * logits.log_softmax(-1)).sum((-1, -2))
        return concrete_log_prob(grouped, logits.log_softmax(-1), self.temperature).sum(-1)

    def kl_to_uniform(self, params: CategoricalParams) -> Tensor:
        """KL(q(z|x) || uniform) = Σ_v Σ_c q log q + V log C ``[n]``, exact."""
        log_probs = params.grouped().log_softmax(-1)
        return (log_probs.exp() * log_probs).sum((-1, -2)) + self.variables * math.log(self.classes)

    def point(self, params: CategoricalParams) -> Tensor:
        """The most probable one-hot z ``[n, dim]``, the latent a family decodes greedily."""
        grouped = params.grouped()
        return F.one_hot(grouped.argmax(-1), self.classes).to(grouped.dtype).flatten(-2)

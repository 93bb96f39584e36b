"""Objectives shared by every model family, computed from named log-weight parts.

Every model returns ``LogWeights``: for k posterior samples z_1..z_k ~ q(z|x),
    log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x)          # [k, batch]
split into its reconstruction, prior and posterior parts. The ELBO is the mean of log w over
the k samples; the importance-weighted bound (Burda et al. 2016) is logsumexp_i log w_i - log k.
A KL weight and free bits act on the regulariser only. The bounds are a registry (``BOUNDS``, name ->
per-example loss); a family or a penalty may add named loss terms (``LogWeights.terms``), each weighted
by ``objective.weights.<name>``, and per-example values to report (``LogWeights.metrics``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from vae_lab.errors import ConfigError


@dataclass
class LogWeights:
    """Named parts of the log importance weights, each ``[k, batch]``: ``log_likelihood`` log p(x|z),
    ``prior`` log p(z), ``posterior`` log q(z|x).

    A family with a closed-form KL(q(z|x) || p(z)) gives it as ``kl_per_dim`` ``[batch, dim]`` when it is
    a sum over latent dimensions (Gaussian posterior and prior; free bits per dimension need it), or as
    ``analytic_kl`` ``[batch]`` when it is not (an RBM cross-entropy minus a posterior entropy).
    ``num_units`` is the number of predicted units per example ``[batch]`` (tokens incl. <eos>,
    characters) for perplexities; None where perplexity means nothing (images). ``encoded`` holds the
    posterior parameters the draws came from (``GaussianParams``) when they do not depend on the draws:
    evaluation passes them back to ``log_weights(…, encoded=…)`` so each batch is encoded once.

    ``terms``: extra loss terms by name, ``[batch]`` each, added to the training loss with the weight
    ``objective.weights.<name>`` (a VQ-VAE's codebook and commitment losses, an MMD penalty), logged as
    ``train/<name>`` and averaged over the split as ``val/<name>``, ``test/<name>``. ``metrics``: values
    by name, ``[batch]`` each, logged and averaged the same way but never optimised.
    """

    log_likelihood: Tensor
    prior: Tensor
    posterior: Tensor
    kl_per_dim: Tensor | None = None
    analytic_kl: Tensor | None = None
    num_units: Tensor | None = None
    encoded: Any = None
    terms: dict[str, Tensor] = field(default_factory=dict)
    metrics: dict[str, Tensor] = field(default_factory=dict)

    @property
    def total(self) -> Tensor:
        """log w = log p(x|z) + log p(z) - log q(z|x)  # [k, batch]"""
        return self.log_likelihood + self.prior - self.posterior

    @property
    def num_samples(self) -> int:
        return self.log_likelihood.shape[0]

    def kl(self) -> Tensor:
        """KL per example ``[batch]``: analytic when available, else the Monte Carlo mean over k."""
        if self.analytic_kl is not None:
            return self.analytic_kl
        if self.kl_per_dim is not None:
            return self.kl_per_dim.sum(-1)
        return (self.posterior - self.prior).mean(0)


def elbo(log_weights: LogWeights) -> Tensor:
    """ELBO per example ``[batch]``: the mean over the k samples of log w (same draws as the IW bound)."""
    return log_weights.total.mean(0)


def iw_bound(log_weights: LogWeights) -> Tensor:
    """Importance-weighted bound per example ``[batch]``: logsumexp_k log w - log k.

    By Jensen's inequality it is >= ``elbo`` on the same draws, with equality at k = 1.
    """
    return torch.logsumexp(log_weights.total, dim=0) - math.log(log_weights.num_samples)


def free_bits_kl(log_weights: LogWeights, free_bits: float, per_dim: bool = True) -> Tensor:
    """KL per example after free bits / min-KL (Kingma et al. 2016; Pelsmaeker & Aziz 2020).

    per_dim: each latent dimension's KL, averaged over the batch, is held at >= ``free_bits`` nats
    (the clamp removes its gradient while under the floor). Otherwise the whole KL of the batch is
    held at >= ``free_bits`` (per-batch min-KL). Returns ``[batch]`` whose batch mean is the clamped
    quantity; with ``free_bits = 0`` it is the plain KL.
    """
    kl = log_weights.kl()  # [batch]
    if free_bits <= 0:
        return kl
    if per_dim:
        if log_weights.kl_per_dim is None:
            raise ValueError("objective.free_bits_per_dim=true needs an analytic per-dimension KL, "
                             "which this model family lacks; set objective.free_bits_per_dim=false")
        floor = torch.clamp(log_weights.kl_per_dim.mean(0), min=free_bits).sum()  # scalar
        # spread the clamped batch total over the examples without changing its mean
        return kl - kl.mean() + floor
    batch_kl = kl.mean()
    return kl - batch_kl + torch.clamp(batch_kl, min=free_bits)


@dataclass
class ObjectiveOutput:
    """What one step optimises and logs. ``loss`` is a scalar; the others are ``[batch]``:
    ``elbo``, ``reconstruction_nll`` = -E_q log p(x|z), ``kl`` and the IW ``bound`` at the step's k, and
    the extra ``terms`` (unweighted)."""

    loss: Tensor
    elbo: Tensor
    reconstruction_nll: Tensor
    kl: Tensor
    bound: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)


def elbo_loss(log_weights: LogWeights, kl_weight: float, free_bits: float, free_bits_per_dim: bool) -> Tensor:
    """-(mean_k log p(x|z_k) - kl_weight · KL_fb) ``[batch]``: the ELBO averaged over the k draws (DVAE /
    DVAE++), with the analytic KL when the family has one (lower variance, same expectation) and free
    bits applied to it."""
    return -(log_weights.log_likelihood.mean(0) - kl_weight * free_bits_kl(log_weights, free_bits, free_bits_per_dim))


def iw_loss(log_weights: LogWeights, kl_weight: float, free_bits: float, free_bits_per_dim: bool) -> Tensor:
    """-(logsumexp_k [log p(x|z) + kl_weight (log p(z) - log q(z|x))] - log k) ``[batch]``: the
    importance-weighted bound with a tempered regulariser (weight 1: the IW bound itself; DVAE#). At
    k = 1 it is the ELBO, trained as ``elbo_loss`` (the analytic KL where there is one). Free bits are
    not defined for it."""
    k = log_weights.num_samples
    if k == 1:
        return elbo_loss(log_weights, kl_weight, free_bits, free_bits_per_dim)
    if free_bits > 0:
        raise ValueError(f"objective.free_bits={free_bits} with objective.bound=iw and k={k}: free bits act "
                         "on the ELBO; set objective.bound=elbo or objective.free_bits=0")
    tempered = log_weights.log_likelihood + kl_weight * (log_weights.prior - log_weights.posterior)  # [k, batch]
    return -(torch.logsumexp(tempered, dim=0) - math.log(k))


# objective.bound -> the per-example training loss (log weights, KL weight, free bits, per dimension)
BOUNDS: dict[str, Callable[[LogWeights, float, float, bool], Tensor]] = {"elbo": elbo_loss, "iw": iw_loss}


def weighted_terms(terms: dict[str, Tensor], weights: dict[str, float]) -> Tensor | float:
    """Σ_name weights[name] · mean(terms[name]); a term without a weight is refused with one line."""
    total = 0.0
    for name, value in terms.items():
        if name not in weights:
            raise ConfigError(f"objective.weights.{name}: the model adds the loss term {name!r} but gives it no "
                              f"weight; set objective.weights.{name}=<weight> (0: log it without training on it)")
        total = total + float(weights[name]) * value.mean()
    return total


def training_objective(log_weights: LogWeights, kl_weight: float = 1.0, free_bits: float = 0.0,
                       free_bits_per_dim: bool = True, bound: str = "elbo",
                       term_weights: dict[str, float] | None = None) -> ObjectiveOutput:
    """The loss a family trains with, and the per-example values it logs: ``BOUNDS[bound]`` averaged over
    the batch, plus the extra terms weighted by ``term_weights`` (none added when it is None, as in
    evaluation). Logged values (``elbo``, ``reconstruction_nll``, ``kl``, ``bound``) are never clamped."""
    if bound not in BOUNDS:
        raise ValueError(f"objective.bound={bound!r}: allowed values are {list(BOUNDS)}")
    log_likelihood = log_weights.log_likelihood.mean(0)  # [batch]
    kl = log_weights.kl()  # [batch]
    loss = BOUNDS[bound](log_weights, kl_weight, free_bits, free_bits_per_dim).mean()
    if term_weights is not None and log_weights.terms:
        loss = loss + weighted_terms(log_weights.terms, term_weights)
    return ObjectiveOutput(loss=loss, elbo=log_likelihood - kl, reconstruction_nll=-log_likelihood, kl=kl,
                           bound=iw_bound(log_weights), terms=dict(log_weights.terms))

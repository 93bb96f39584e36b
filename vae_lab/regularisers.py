"""The regulariser of every (posterior, prior) pair, declared once in ``REGULARISERS``.

A family draws z from its posterior (``posterior=``), decodes it, and asks the table how the pair
scores log p(z) - log q(z|x): the parts of the log weights (vae_lab/objectives.py), with a closed-form
KL where one exists. The row is the posterior's kind (``gaussian``, or ``bernoulli/<relaxation
family>``), the column the prior's support (``continuous`` densities: normal, mixture, aggregate;
``boltzmann``: the RBM), and each cell gives one regulariser per ``objective.bound``:

| posterior | prior | ELBO | IW bound |
|---|---|---|---|
| gaussian | continuous | analytic KL while p is N(0, I) (``prior.analytic_kl``), else Monte Carlo log q - log p | Monte Carlo log q - log p |
| bernoulli, overlapping smoothing | boltzmann | DVAE++: cross-entropy with the RBM minus the entropy | DVAE#: log q(ζ) - the mean-field relaxed prior's log p(ζ) |
| bernoulli, spike-and-exponential | boltzmann | DVAE: the same KL (one group), Rolfe's surrogate (hierarchical) | none (the spike has no density) |
| bernoulli, Gaussian integral | boltzmann | DVAE#: log q(ζ) - the Gaussian-integral prior's log p(ζ) | the same |

In evaluation every Bernoulli × Boltzmann cell scores binary z: the factorial Bernoulli log q and the
discrete RBM's log p with its estimated log Z. Any other pair has no regulariser (a Gaussian density
of binary z, an RBM of continuous z): ``pick`` stops with one line naming the pairs that work.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from vae_lab.errors import ConfigError
from vae_lab.posteriors.bernoulli import bernoulli_entropy
from vae_lab.posteriors.gaussian import GaussianPosterior
from vae_lab.priors.relaxed import gaussian_integral_lambda, gaussian_integral_log_marginal, mean_field_log_marginal


@dataclass
class Encoding:
    """One pass of a posterior, by group of latents (one group unless the posterior is hierarchical):
    its parameters (``GaussianParams`` / ``BernoulliParams``, ``[rows, group]``) and draws (``[..., rows, group]``;
    the text families' ``[k, batch, dim]`` over parameters of ``[batch, dim]``, the image family's
    ``[k batch, group]``, k-major, over parameters repeated k times). ``relaxed``: training's ζ, else
    binary (or Gaussian) z. ``latents``: the draws side by side, the tensor the family decoded (one
    node of the graph for the decoder and the regulariser: the same gradients, summed in the same order)."""

    posterior: Any
    params: list
    draws: list[Tensor]
    relaxed: bool
    num_samples: int
    batch_size: int
    latents: Tensor | None = None

    def __post_init__(self):
        if self.latents is None:
            self.latents = torch.cat(self.draws, dim=-1)

    @property
    def joined(self):
        """The parameters of all groups side by side."""
        return type(self.params[0]).cat(self.params)

    def per_example(self, values: Tensor) -> Tensor:
        """``[batch, ...]`` from values over the draws' rows: the mean over the k draws when there are k per example."""
        if values.shape[0] == self.batch_size:
            return values
        return values.view(self.num_samples, self.batch_size, *values.shape[1:]).mean(0)

    def relaxed_log_q(self) -> Tensor:
        """log q(ζ|x) of the relaxed draws, summed over every unit, group by group."""
        total, offset = 0.0, 0
        for params, zeta in zip(self.params, self.draws):
            total = total + self.posterior.log_q(zeta, params, relaxed=True, offset=offset)
            offset += zeta.shape[-1]
        return total


@dataclass
class Terms:
    """A regulariser's parts of the log weights: ``prior`` log p(z) and ``posterior`` log q(z|x) over the
    draws' rows, and the closed-form KL where there is one (``kl_per_dim`` ``[batch, dim]``, ``analytic_kl`` ``[batch]``)."""

    prior: Tensor
    posterior: Tensor
    kl_per_dim: Tensor | None = None
    analytic_kl: Tensor | None = None


Regulariser = Callable[[Encoding, Any], Terms]


def gaussian_kl(encoding: Encoding, prior) -> Terms:
    """log p(z) and log q(z|x) of the draws; the analytic KL to N(0, I) per dimension while the prior is N(0, I)."""
    latents, params = encoding.latents, encoding.joined
    kl_per_dim = None
    if prior.analytic_kl:
        kl_per_dim = encoding.per_example(GaussianPosterior.kl_per_dim(params.mean, params.log_var))
    return Terms(prior=prior.log_prob(latents), posterior=encoding.posterior.log_q(latents, params),
                 kl_per_dim=kl_per_dim)


def _binary(encoding: Encoding, prior) -> Terms:
    """Evaluation: the discrete prior's log p(z) (its estimated log Z) and the factorial Bernoulli log q(z|x)."""
    latents = encoding.latents
    return Terms(prior=prior.log_prob(latents),
                 posterior=encoding.posterior.log_q(latents, encoding.joined, relaxed=False))


def dvaepp_kl(encoding: Encoding, prior) -> Terms:
    """DVAE++ (Vahdat et al. 2018, eq. 9): E_q[E(z)] + log Z - H(q) per row; the left half's means are
    perturbed by log r(ζ|1) - log r(ζ|0) of the sampled ζ when the posterior is hierarchical. The KL
    takes the place of log q - log p in the log weights."""
    if not encoding.relaxed:
        return _binary(encoding, prior)
    log_z = prior.log_z_train()
    logits, rbm = encoding.joined.logits, prior.rbm
    q_left, q_right = rbm.split(torch.sigmoid(logits))  # [rows, n_left], [rows, n_right]
    coupled_left = q_left  # ν_left: the means the coupling term sees
    if len(encoding.draws) > 1:
        log_ratio = encoding.posterior.relaxation.log_ratio(torch.cat(encoding.draws, dim=-1))
        coupled_left = torch.sigmoid(rbm.split(logits)[0] + rbm.split(log_ratio)[0])
    cross_entropy = (-(q_left @ rbm.bias_left) - q_right @ rbm.bias_right
                     - ((coupled_left @ rbm.weight) * q_right).sum(-1) + log_z)
    kl = cross_entropy - bernoulli_entropy(logits).sum(-1)
    rows = encoding.latents.shape[:-1]
    return Terms(prior=(-kl).expand(rows), posterior=torch.zeros_like(kl).expand(rows),
                 analytic_kl=encoding.per_example(kl))


def dvae_kl(encoding: Encoding, prior) -> Terms:
    """DVAE (Rolfe 2016): the analytic KL for one group; for hierarchical posteriors a surrogate whose
    gradient is the KL's (eqs. 11-12; its value is not the KL). Earlier groups enter as binary
    z = [ζ > 0], the last by its means; the prior's sampler supplies the RBM's negative phase."""
    if not encoding.relaxed or len(encoding.draws) == 1:
        return dvaepp_kl(encoding, prior)
    logits, rbm, zetas = encoding.joined.logits, prior.rbm, encoding.draws
    probs = torch.sigmoid(logits.clamp(-88.0, 88.0))
    last = len(zetas) - 1
    group_size = zetas[-1].shape[-1]
    binary = [(zeta > 0).to(logits.dtype) for zeta in zetas[:last]] + [probs[:, last * group_size:]]
    samples = torch.cat(binary, dim=-1).detach()  # [rows, units]
    left, right = rbm.split(samples)
    bias = torch.cat([rbm.bias_left, rbm.bias_right])
    coupled = torch.cat([right @ rbm.weight.t(), left @ rbm.weight], dim=-1)  # [rows, units]
    capped = probs.clamp(max=0.999)
    scale = (1.0 - samples) / (1.0 - capped)
    scale = torch.cat([rbm.split(scale)[0], torch.ones_like(right)], dim=-1)
    posterior_part = ((logits - bias - coupled * scale).detach() * capped).sum(-1)
    positive = -(((left @ rbm.weight) * right).sum(-1) + probs.detach() @ bias).mean()
    negative = -rbm.energy(prior.sampler.sample().detach()).mean()
    kl = posterior_part + positive + negative
    return Terms(prior=-kl, posterior=torch.zeros_like(kl), analytic_kl=encoding.per_example(kl))


def mean_field_relaxed(encoding: Encoding, prior) -> Terms:
    """DVAE#: log q(ζ|x) and the relaxed prior's log p(ζ) = mean-field log Σ_z e^{-E(z)} r(ζ|z) - log Z."""
    if not encoding.relaxed:
        return _binary(encoding, prior)
    latents = encoding.latents
    log_marginal = mean_field_log_marginal(prior.rbm, latents, encoding.posterior.relaxation.smoothing.log_pdf)
    return Terms(prior=log_marginal - prior.log_z_train(), posterior=encoding.relaxed_log_q())


def gaussian_integral_relaxed(encoding: Encoding, prior) -> Terms:
    """DVAE#'s Gaussian integral trick: log q(ζ|x) and the RBM's exact continuous marginal log p(ζ), with
    λ = max(the relaxation's minimum_lambda, 5 + max(0, -λ_min(W)))."""
    if not encoding.relaxed:
        return _binary(encoding, prior)
    lam = gaussian_integral_lambda(prior.rbm, encoding.posterior.relaxation.minimum_lambda)
    log_marginal = gaussian_integral_log_marginal(prior.rbm, encoding.latents, lam)
    return Terms(prior=log_marginal - prior.log_z_train(), posterior=encoding.relaxed_log_q())


# (posterior row, prior support) -> {objective.bound: regulariser}; the one place a pair is declared
REGULARISERS: dict[tuple[str, str], dict[str, Regulariser]] = {
    ("gaussian", "continuous"): {"elbo": gaussian_kl, "iw": gaussian_kl},
    ("bernoulli/overlapping", "boltzmann"): {"elbo": dvaepp_kl, "iw": mean_field_relaxed},
    ("bernoulli/spike_and_exponential", "boltzmann"): {"elbo": dvae_kl},
    ("bernoulli/gaussian_integral", "boltzmann"): {"elbo": gaussian_integral_relaxed,
                                                    "iw": gaussian_integral_relaxed},
}


def pick(row: str, support: str, bound: str) -> Regulariser:
    """The regulariser of a posterior row and a prior support under ``bound``; a ConfigError that names
    the pairs that work when there is none."""
    regulariser = REGULARISERS.get((row, support), {}).get(bound)
    if regulariser is None:
        pairs = "; ".join(f"{r} × {s} ({', '.join(cells)})" for (r, s), cells in REGULARISERS.items())
        raise ConfigError(f"posterior {row} × prior {support}, objective.bound={bound}: no regulariser; "
                          f"the pairs that work (posterior × prior support, bounds): {pairs}")
    return regulariser


def regulariser_of(posterior, prior, bound: str) -> Regulariser:
    """``pick`` for built parts: the posterior's ``row`` and the prior's ``support``."""
    return pick(posterior.row, prior.support, bound)

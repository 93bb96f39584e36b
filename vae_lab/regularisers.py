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

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from vae_lab.densities import standard_normal_kl_per_dim
from vae_lab.errors import ConfigError
from vae_lab.posteriors.bernoulli import bernoulli_entropy


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
    draws' rows, the closed-form KL where there is one (``kl_per_dim`` ``[batch, dim]``, ``analytic_kl``
    ``[batch]``), and the pair's own loss terms and metrics by name (``[batch]`` each: a VQ posterior's
    codebook and commitment losses; ``LogWeights.terms`` / ``.metrics``)."""

    prior: Tensor
    posterior: Tensor
    kl_per_dim: Tensor | None = None
    analytic_kl: Tensor | None = None
    terms: dict[str, Tensor] = field(default_factory=dict)
    metrics: dict[str, Tensor] = field(default_factory=dict)


Regulariser = Callable[[Encoding, Any], Terms]  # with ``needs``: the prior methods it calls (``@needs``)


def needs(*methods: str) -> Callable[[Regulariser], Regulariser]:
    """Declare the prior's methods a cell calls (beyond ``log_prob``): the prior must offer them (``Prior.offers``)."""
    def declare(cell: Regulariser) -> Regulariser:
        cell.needs = frozenset(methods)
        return cell
    return declare


@needs()
def gaussian_kl(encoding: Encoding, prior) -> Terms:
    """log p(z) and log q(z|x) of the draws; the analytic KL to N(0, I) per dimension while the prior is N(0, I)."""
    latents, params = encoding.latents, encoding.joined
    kl_per_dim = None
    if prior.analytic_kl:
        kl_per_dim = encoding.per_example(standard_normal_kl_per_dim(params.mean, params.log_var))
    return Terms(prior=prior.log_prob(latents), posterior=encoding.posterior.log_q(latents, params),
                 kl_per_dim=kl_per_dim)


def _binary(encoding: Encoding, prior) -> Terms:
    """Evaluation: the discrete prior's log p(z) (its estimated log Z) and the factorial Bernoulli log q(z|x)."""
    latents = encoding.latents
    return Terms(prior=prior.log_prob(latents),
                 posterior=encoding.posterior.log_q(latents, encoding.joined, relaxed=False))


@needs("log_z_train", "split", "expected_energy")
def dvaepp_kl(encoding: Encoding, prior) -> Terms:
    """DVAE++ (Vahdat et al. 2018, eq. 9): E_q[E(z)] + log Z - H(q) per row; the left half's means are
    perturbed by log r(ζ|1) - log r(ζ|0) of the sampled ζ when the posterior is hierarchical. The KL
    takes the place of log q - log p in the log weights."""
    if not encoding.relaxed:
        return _binary(encoding, prior)
    log_z = prior.log_z_train()
    logits = encoding.joined.logits
    q_left, q_right = prior.split(torch.sigmoid(logits))  # [rows, n_left], [rows, n_right]
    coupled_left = q_left  # ν_left: the means the coupling term sees
    if len(encoding.draws) > 1:
        log_ratio = encoding.posterior.log_ratio(torch.cat(encoding.draws, dim=-1))
        coupled_left = torch.sigmoid(prior.split(logits)[0] + prior.split(log_ratio)[0])
    cross_entropy = prior.expected_energy(q_left, q_right, coupled_left) + log_z
    kl = cross_entropy - bernoulli_entropy(logits).sum(-1)
    rows = encoding.latents.shape[:-1]
    return Terms(prior=(-kl).expand(rows), posterior=torch.zeros_like(kl).expand(rows),
                 analytic_kl=encoding.per_example(kl))


@needs("log_z_train", "split", "expected_energy", "biases", "couplings", "interaction", "model_sample_energy")
def dvae_kl(encoding: Encoding, prior) -> Terms:
    """DVAE (Rolfe 2016): the analytic KL for one group; for hierarchical posteriors a surrogate whose
    gradient is the KL's (eqs. 11-12; its value is not the KL). Earlier groups enter as binary
    z = [ζ > 0], the last by its means; the prior's sampler supplies the RBM's negative phase."""
    if not encoding.relaxed or len(encoding.draws) == 1:
        return dvaepp_kl(encoding, prior)
    logits, zetas = encoding.joined.logits, encoding.draws
    probs = torch.sigmoid(logits.clamp(-88.0, 88.0))
    last = len(zetas) - 1
    group_size = zetas[-1].shape[-1]
    binary = [(zeta > 0).to(logits.dtype) for zeta in zetas[:last]] + [probs[:, last * group_size:]]
    samples = torch.cat(binary, dim=-1).detach()  # [rows, units]
    right = prior.split(samples)[1]
    bias = prior.biases()
    coupled = prior.couplings(samples)  # [rows, units]
    capped = probs.clamp(max=0.999)
    scale = (1.0 - samples) / (1.0 - capped)
    scale = torch.cat([prior.split(scale)[0], torch.ones_like(right)], dim=-1)
    posterior_part = ((logits - bias - coupled * scale).detach() * capped).sum(-1)
    positive = -(prior.interaction(samples) + probs.detach() @ bias).mean()
    negative = -prior.model_sample_energy().mean()
    kl = posterior_part + positive + negative
    return Terms(prior=-kl, posterior=torch.zeros_like(kl), analytic_kl=encoding.per_example(kl))


@needs("log_z_train", "relaxed_log_marginal")
def mean_field_relaxed(encoding: Encoding, prior) -> Terms:
    """DVAE#: log q(ζ|x) and the relaxed prior's log p(ζ) = mean-field log Σ_z e^{-E(z)} r(ζ|z) - log Z."""
    if not encoding.relaxed:
        return _binary(encoding, prior)
    log_marginal = prior.relaxed_log_marginal(encoding.latents, encoding.posterior.smoothing_log_r0)
    return Terms(prior=log_marginal - prior.log_z_train(), posterior=encoding.relaxed_log_q())


@needs("log_z_train", "gaussian_integral_log_marginal")
def gaussian_integral_relaxed(encoding: Encoding, prior) -> Terms:
    """DVAE#'s Gaussian integral trick: log q(ζ|x) and the RBM's exact continuous marginal log p(ζ), with
    λ = max(the relaxation's minimum_lambda, 5 + max(0, -λ_min(W)))."""
    if not encoding.relaxed:
        return _binary(encoding, prior)
    log_marginal = prior.gaussian_integral_log_marginal(encoding.latents, encoding.posterior.minimum_lambda)
    return Terms(prior=log_marginal - prior.log_z_train(), posterior=encoding.relaxed_log_q())


@needs("relaxed_log_prob")
def categorical_kl(encoding: Encoding, prior) -> Terms:
    """Categorical latents (Jang et al. 2017): the exact KL(q(z|x) || uniform) as the analytic KL; log q and
    log p of the draws, relaxed (Concrete densities of the Gumbel-softmax draws, the relaxed prior at the
    posterior's temperature: the IW bound's weights) or one-hot (evaluation, and straight-through training,
    whose draws are one-hot in value: exact categorical densities; a Concrete density at a vertex is no density)."""
    posterior, latents, params = encoding.posterior, encoding.latents, encoding.joined
    kl = encoding.per_example(posterior.kl_to_uniform(params))  # given the earlier groups' draws, if any
    if encoding.relaxed and not posterior.straight_through:
        log_p = prior.relaxed_log_prob(latents, posterior.temperature)
        return Terms(prior=log_p, posterior=encoding.relaxed_log_q(), analytic_kl=kl)
    return Terms(prior=prior.log_prob(latents), posterior=posterior.log_q(latents, params, relaxed=False),
                 analytic_kl=kl)


@needs()
def vector_quantised(encoding: Encoding, prior) -> Terms:
    """VQ-VAE: q(z|x) a point mass on the nearest codes (log q = 0), p(z) uniform over the codes, so the KL is
    the constant -log p(z) = positions · log K; the codebook and commitment losses as loss terms, the
    batch's code perplexity as a metric."""
    posterior, params, latents = encoding.posterior, encoding.joined, encoding.latents
    log_p = prior.log_prob(latents)
    codebook, commitment = posterior.quantisation_losses(params)
    return Terms(prior=log_p, posterior=posterior.log_q(latents, params),
                 analytic_kl=-encoding.per_example(log_p.reshape(-1)),  # rows, k-major
                 terms={"codebook": encoding.per_example(codebook), "commitment": encoding.per_example(commitment)},
                 metrics={"code_perplexity": encoding.per_example(posterior.code_perplexity(params))})


# (posterior row, prior support) -> {objective.bound: regulariser}; the one place a pair is declared
REGULARISERS: dict[tuple[str, str], dict[str, Regulariser]] = {
    ("gaussian", "continuous"): {"elbo": gaussian_kl, "iw": gaussian_kl},
    ("bernoulli/overlapping", "boltzmann"): {"elbo": dvaepp_kl, "iw": mean_field_relaxed},
    ("bernoulli/spike_and_exponential", "boltzmann"): {"elbo": dvae_kl},
    ("bernoulli/gaussian_integral", "boltzmann"): {"elbo": gaussian_integral_relaxed,
                                                    "iw": gaussian_integral_relaxed},
    ("categorical", "categorical"): {"elbo": categorical_kl, "iw": categorical_kl},
    ("vq", "codes"): {"elbo": vector_quantised, "iw": vector_quantised},
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


def missing_methods(regulariser: Regulariser, prior_class: type) -> list[str]:
    """The methods a cell ``needs`` that the prior class does not offer (``Prior.offers``)."""
    return sorted(regulariser.needs - prior_class.offers)


def regulariser_of(posterior, prior, bound: str) -> Regulariser:
    """``pick`` for built parts: the posterior's ``row`` and the prior's ``support``; the prior must offer
    what the cell calls."""
    regulariser = pick(posterior.row, prior.support, bound)
    missing = missing_methods(regulariser, type(prior))
    if missing:
        raise ConfigError(f"prior {type(prior).__name__} (support {prior.support}) does not offer {', '.join(missing)}, "
                          f"which the {posterior.row} × {prior.support} regulariser ({regulariser.__name__}) calls: "
                          "add them to the prior's class and its `offers`")
    return regulariser

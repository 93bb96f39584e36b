"""Sequential importance sampling along a path of RBMs: the engine of AIS and population annealing.

The state of each chain is z_left only; z_right is summed out analytically (Salakhutdinov & Murray 2008),
so the importance weights use the marginal
    log p*_s(z_left) = a(s)^T z_left + sum_j softplus(b(s) + z_left W(s))_j,
on the linear path of parameters theta(s) = (1 - s) theta_start + s theta_end, s: 0 -> 1 over a ladder.
With theta_start = (a_base, b_base, W = 0) a factorial base this is the usual inverse-temperature path
p_s ∝ exp(-(1 - s) E_base - s E), s the inverse temperature; with theta_start a previous RBM it tracks a parameter update.

Each step t: log w_i += log p*_{s_t}(z_i) - log p*_{s_{t-1}}(z_i); log Z_t - log Z_{t-1} =
log sum_i W_i exp(Δ_i) with W the normalized weights carried over (uniform after a resampling); then
resample if ESS = 1 / sum_i W_i^2 < threshold * N; then Gibbs sweeps at s_t. Without resampling the
sum of increments telescopes to log mean_i w_i, the AIS estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vae_lab.priors.boltzmann import GibbsSweeper

RBMParams = tuple[Tensor, Tensor, Tensor | None]  # (bias_left [n_left], bias_right [n_right], weight or None)


@dataclass
class AnnealingResult:
    """Output of one annealing run.

    log_z: float64 scalar estimate of log Z at the end of the path.
    log_z_std_err: float64 scalar delta-method standard error over chains, std(w) / (mean(w) sqrt(N));
        None when the run resampled (chains are then no longer independent).
    z_left, z_right: the final population [chains, n_left], [chains, n_right].
    log_weights: float64 [chains], normalized log importance weights of the final population
        (logsumexp = 0); E_p[f] ≈ sum_i exp(log_weights_i) f(z_i). Uniform after a final resampling.
    num_resamples: how many times the population was resampled.
    """

    log_z: Tensor
    log_z_std_err: Tensor | None
    z_left: Tensor
    z_right: Tensor
    log_weights: Tensor
    num_resamples: int

    @property
    def samples(self) -> Tensor:
        """The final population as full states, [chains, n_left + n_right]."""
        return torch.cat([self.z_left, self.z_right], dim=-1)

    @property
    def effective_sample_size(self) -> float:
        return float(effective_sample_size(self.log_weights))


def systematic_resample(log_weights: Tensor, generator: torch.Generator | None) -> Tensor:
    """Indices [N] of a systematic resampling of normalized log weights [N] (one uniform, N strata)."""
    num = log_weights.shape[0]
    cumulative = torch.cumsum(torch.exp(log_weights), dim=0)  # [N], float64
    offset = torch.rand((), generator=generator, device=log_weights.device, dtype=torch.float64)
    points = (torch.arange(num, device=log_weights.device, dtype=torch.float64) + offset) / num
    points = points * cumulative[-1]  # guards against rounding in the last cumulative sum
    return torch.searchsorted(cumulative, points, right=True).clamp_(max=num - 1)


def multinomial_resample(log_weights: Tensor, generator: torch.Generator | None) -> Tensor:
    """Indices [N] of N draws with replacement from the normalized weights exp(log_weights)."""
    return torch.multinomial(torch.exp(log_weights), log_weights.shape[0], replacement=True, generator=generator)


RESAMPLERS = {"systematic": systematic_resample, "multinomial": multinomial_resample}


def effective_sample_size(log_weights: Tensor) -> Tensor:
    """ESS = 1 / sum_i W_i^2 of normalized log weights [N]."""
    return torch.exp(-torch.logsumexp(2.0 * log_weights, dim=0))


def factorial_base(bias_left: Tensor, bias_right: Tensor, kind: str) -> RBMParams:
    """Start of the annealing path: 'uniform' (zero biases) or 'biases' (the RBM's own biases, W = 0)."""
    if kind == "uniform":
        return torch.zeros_like(bias_left), torch.zeros_like(bias_right), None
    if kind == "biases":
        return bias_left, bias_right, None
    raise ValueError(f"unknown annealing base {kind!r}; use 'uniform' or 'biases'")


def base_log_z(base: RBMParams) -> Tensor:
    """log Z of a factorial base: sum softplus(a) + sum softplus(b), float64."""
    return F.softplus(base[0].double()).sum() + F.softplus(base[1].double()).sum()


@torch.no_grad()
def sample_factorial_left(base: RBMParams, num_chains: int, generator: torch.Generator | None) -> Tensor:
    """z_left ~ prod_i Bernoulli(sigmoid(a_base_i)), the left marginal of a factorial base, [chains, n_left]."""
    probs = torch.sigmoid(base[0]).expand(num_chains, -1)
    uniform = torch.rand(probs.shape, generator=generator, device=probs.device, dtype=probs.dtype)
    return (uniform < probs).to(probs.dtype)


@torch.no_grad()
def anneal(start: RBMParams, end: RBMParams, z_left: Tensor, log_weights: Tensor, log_z_start: Tensor,
           ladder: Tensor, generator: torch.Generator | None, *, num_sweeps: int = 1,
           resample_threshold: float = 0.5, resampling: str = "systematic",
           resample_final: bool = False) -> AnnealingResult:
    """Anneal a weighted population along the linear parameter path start -> end over `ladder`.

    z_left [chains, n_left] must be distributed as p_start (weighted by the normalized log_weights [chains]);
    ladder [T + 1] goes from 0 to 1. `start` may have weight None (factorial base). resample_threshold is
    the ESS fraction below which the population is resampled (0 = never: AIS). resample_final resamples
    at the last step whatever the ESS, so the returned population is unweighted.
    Returns the population after the Gibbs sweeps at s = 1 and log Z_end = log_z_start + sum of increments.
    """
    if len(ladder) < 2:
        raise ValueError("the annealing ladder needs at least two points, 0 and 1")
    a_start, b_start, w_start = start
    a_end, b_end, w_end = end
    num_chains, n_left = z_left.shape
    n_right = b_end.shape[0]
    resample = RESAMPLERS[resampling]
    sweeper = GibbsSweeper(num_chains, n_left, n_right, device=z_left.device, dtype=z_left.dtype)
    a_delta = a_end - a_start  # [n_left]
    ladder_values = [float(s) for s in ladder]
    log_weights = log_weights.to(torch.float64).clone()
    log_z = log_z_start.to(torch.float64).clone()
    hidden_end = torch.empty(num_chains, n_right, device=z_left.device, dtype=z_left.dtype)
    logits_prev = torch.empty_like(hidden_end)
    logits = torch.empty_like(hidden_end)
    num_resamples = 0
    resampled = False
    for step in range(1, len(ladder_values)):
        s_prev, s = ladder_values[step - 1], ladder_values[step]
        b_prev, b_now = torch.lerp(b_start, b_end, s_prev), torch.lerp(b_start, b_end, s)
        # logits of z_right given z_left at s_prev and s: b(s) + z_left W(s), [chains, n_right]
        torch.mm(z_left, w_end, out=hidden_end)
        if w_start is None:
            torch.add(b_prev, hidden_end, alpha=s_prev, out=logits_prev)
            torch.add(b_now, hidden_end, alpha=s, out=logits)
        else:
            hidden_start = z_left @ w_start
            torch.add(b_prev, torch.lerp(hidden_start, hidden_end, s_prev), out=logits_prev)
            torch.add(b_now, torch.lerp(hidden_start, hidden_end, s), out=logits)
        # Δ_i = log p*_s(z_i) - log p*_{s_prev}(z_i), summed in float64, [chains]
        delta = (s - s_prev) * (z_left @ a_delta).double()
        delta += (F.softplus(logits) - F.softplus(logits_prev)).sum(-1, dtype=torch.float64)
        log_weights += delta
        log_norm = torch.logsumexp(log_weights, dim=0)
        log_z += log_norm  # log sum_i W_i exp(Δ_i), since the carried W were normalized
        log_weights -= log_norm
        is_last = step == len(ladder_values) - 1
        must_resample = resample_final and is_last
        if must_resample or (resample_threshold > 0
                             and float(effective_sample_size(log_weights)) < resample_threshold * num_chains):
            index = resample(log_weights, generator)  # [chains]
            z_left = z_left[index]
            logits = logits[index]
            log_weights.fill_(-math.log(num_chains))
            num_resamples += 1
            resampled = True
        # Gibbs sweeps at s; the first z_right | z_left reuses the logits computed above
        weight_now = w_end if w_start is None else torch.lerp(w_start, w_end, s)
        scale = s if w_start is None else 1.0
        sweeper.set_params(torch.lerp(a_start, a_end, s), b_now, weight_now, scale)
        sweeper.generator = generator
        z_right = sweeper.right_from_logits(logits)
        for sweep in range(num_sweeps):
            z_left = sweeper.sweep_left(z_right)
            if sweep < num_sweeps - 1:
                z_right = sweeper.sweep_right(z_left)
    std_err = None if resampled else _log_mean_std_err(log_weights)
    return AnnealingResult(log_z, std_err, z_left.clone(), z_right.clone(), log_weights, num_resamples)


def _log_mean_std_err(log_weights: Tensor) -> Tensor:
    """Delta-method standard error of log mean_i w_i from normalized log weights [N]: std(w) / (mean(w) sqrt(N))."""
    num = log_weights.shape[0]
    weights = torch.exp(log_weights)  # sum to 1, mean 1/N
    variance = ((weights - 1.0 / num) ** 2).sum() / max(num - 1, 1)
    return torch.sqrt(variance) * num / math.sqrt(num)

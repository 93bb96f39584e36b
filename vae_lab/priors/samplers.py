"""Samplers for the RBM prior (PCD, population annealing, AIS) and the surrogate that carries ∇ log Z.

Every sampler is built as `Sampler(rbm, **config)` (so `hydra.utils.instantiate(cfg.sampler, rbm=rbm)`
works), owns a `torch.Generator` seeded from `seed` on the RBM's device, and offers
    sample() -> [num_chains, n_left + n_right] detached, equally weighted samples of the current RBM,
    log_z_term() -> scalar surrogate for log Z (see `log_z_surrogate`),
    log_z -> the latest log Z estimate (float64 scalar) or None (PCD has none),
    reset() -> forget persistent state.

The training trick: ∇_θ log Z = E_p[-∇_θ E(z)], so for detached samples z_i ~ p the scalar
S = -(1/N) sum_i E(z_i) has ∇S ≈ ∇ log Z. `log_z_surrogate` returns S - S.detach() + value, whose
gradient is ∇S and whose value is the sampler's log Z estimate (or 0 when there is none); then
log p(z) = -E(z) - log_z_surrogate(...) has the maximum-likelihood gradient under plain autograd.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vae_lab.devices import generator_on
from vae_lab.priors.ais import (RESAMPLERS, AnnealingResult, anneal, base_log_z, factorial_base,
                                      sample_factorial_left)
from vae_lab.priors.boltzmann import RBM, GibbsSweeper


def log_z_surrogate(rbm: RBM, samples: Tensor, log_z_value: Tensor | float | None = None,
                    log_weights: Tensor | None = None, rao_blackwell: bool = True) -> Tensor:
    """Scalar with gradient ∇ log Z estimated from samples [N, n_units] of the RBM, and value log_z_value (or 0).

    S = -sum_i W_i E(z_i) with normalized weights W = softmax(log_weights) (uniform by default) and z detached,
    so ∇S = E_p[-∇E] = ∇ log Z up to Monte Carlo error. With rao_blackwell the energy is replaced by the
    marginal free energy F(z_left) of the left half, whose gradient is E_{p(z_right | z_left)}[∇E]: same mean,
    lower variance.
    """
    samples = samples.detach()
    z_left = rbm.split(samples)[0]
    energies = rbm.free_energy_left(z_left) if rao_blackwell else rbm.energy(samples)  # [N]
    if log_weights is None:
        surrogate = -energies.mean()
    else:
        surrogate = -(torch.softmax(log_weights.detach(), dim=0).to(energies.dtype) * energies).sum()
    value = 0.0 if log_z_value is None else torch.as_tensor(log_z_value).detach().to(surrogate)
    return surrogate - surrogate.detach() + value


class RBMSampler:
    """Common plumbing: the RBM, the seeded generator on its device, and the surrogate."""

    def __init__(self, rbm: RBM, num_chains: int, seed: int | None = 0, rao_blackwell: bool = True):
        self.rbm = rbm
        self.num_chains = num_chains
        self.seed = seed
        self.rao_blackwell = rao_blackwell
        self.log_z: Tensor | None = None
        self._generator: torch.Generator | None = None
        self._saved_state: tuple[str, Tensor] | None = None  # a checkpoint's generator state, until it applies

    @property
    def generator(self) -> torch.Generator:
        """The sampler's generator, on the RBM's device (re-created, from the same seed, if the RBM moved)."""
        device = self.rbm.weight.device
        if self._generator is None or self._generator.device != device:
            self._generator = generator_on(device, self.seed)
            if self._saved_state is not None:
                saved_on, state = self._saved_state
                if saved_on == device.type:  # a CPU state does not fit a CUDA generator, nor the reverse
                    self._generator.set_state(state)
                self._saved_state = None  # on another device: the draws restart from the seed
        return self._generator

    def _params(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.rbm.bias_left.detach(), self.rbm.bias_right.detach(), self.rbm.weight.detach()

    def sample(self) -> Tensor:
        raise NotImplementedError

    def reset(self) -> None:
        self.log_z = None

    def log_z_term(self, fallback_value: Tensor | float | None = None) -> Tensor:
        """Draw samples and return the surrogate whose gradient is ∇ log Z and value self.log_z, or
        ``fallback_value`` (e.g. the last evaluation's estimate) when the sampler has none, or 0."""
        samples = self.sample()
        value = self.log_z if self.log_z is not None else fallback_value
        return log_z_surrogate(self.rbm, samples, value, rao_blackwell=self.rao_blackwell)

    def state_dict(self) -> dict:
        """What a resumed run needs to continue the same draws: the generator's state."""
        return {"generator": self.generator.get_state(), "generator_device": self.generator.device.type}

    def load_state_dict(self, state: dict) -> None:
        """Applied when the generator is next made, on the RBM's device then: a checkpoint written on
        another device (trained on a GPU, tested on the CPU) starts the draws from the seed instead."""
        self._saved_state = (state.get("generator_device", "cpu"), state["generator"].cpu())
        self._generator = None


class PCD(RBMSampler):
    """Persistent contrastive divergence: num_chains block-Gibbs chains advanced num_sweeps sweeps per call.

    The chains persist across calls (and parameter updates) until reset(); they start uniform at random.
    """

    def __init__(self, rbm: RBM, num_chains: int = 1000, num_sweeps: int = 40, seed: int | None = 0,
                 rao_blackwell: bool = True):
        super().__init__(rbm, num_chains, seed, rao_blackwell)
        self.num_sweeps = num_sweeps
        self.z_left: Tensor | None = None  # [chains, n_left], the persistent state
        self._sweeper: GibbsSweeper | None = None

    def reset(self) -> None:
        """Re-initialise the chains (uniformly at random on the next call)."""
        super().reset()
        self.z_left = None

    def _ensure_state(self) -> None:
        weight = self.rbm.weight
        if self.z_left is not None and (self.z_left.device != weight.device or self.z_left.dtype != weight.dtype):
            self.z_left, self._sweeper = self.z_left.to(weight.device, weight.dtype), None  # the chains follow the RBM
        if self.z_left is None or self.z_left.shape != (self.num_chains, self.rbm.n_left):
            uniform = torch.rand(self.num_chains, self.rbm.n_left, generator=self.generator, device=weight.device,
                                 dtype=weight.dtype)
            self.z_left = (uniform < 0.5).to(weight.dtype)
            self._sweeper = None
        if self._sweeper is None:  # new chains, or chains restored from a checkpoint
            self._sweeper = GibbsSweeper(self.num_chains, self.rbm.n_left, self.rbm.n_right, device=weight.device,
                                         dtype=weight.dtype)

    @torch.no_grad()
    def sample(self, num_sweeps: int | None = None) -> Tensor:
        """Advance the chains num_sweeps (default self.num_sweeps) sweeps; [num_chains, n_units], detached."""
        self._ensure_state()
        self._sweeper.set_params(*self._params())
        z_left, z_right = self._sweeper.run(self.z_left, self.num_sweeps if num_sweeps is None else num_sweeps,
                                            self.generator)
        self.z_left = z_left.clone()
        return torch.cat([z_left, z_right], dim=-1)

    def state_dict(self) -> dict:
        """The persistent chains and the generator's state."""
        return {**super().state_dict(), "z_left": None if self.z_left is None else self.z_left.clone()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.z_left, self._sweeper = state["z_left"], None


class PopulationAnnealing(RBMSampler):
    """Population annealing from a factorial base (inverse temperature s = 0) to the RBM (s = 1); samples and log Z.

    num_temperatures evenly spaced inverse temperatures including 0 and 1; num_sweeps block-Gibbs sweeps at each; the
    population is resampled (systematic or multinomial) when ESS / N < resample_threshold and always at
    s = 1, so samples come back unweighted. log Z = log Z_base + sum_t log sum_i W_i exp(Δ_i).
    With persistent=True the next call warm-starts from the last population and anneals along the
    parameter path from the previous RBM to the current one over num_persistent_temperatures steps, adding
    that log-ratio to the previous log Z (errors then accumulate until reset()).
    """

    def __init__(self, rbm: RBM, num_chains: int = 1000, num_temperatures: int = 100, num_sweeps: int = 1,
                 resample_threshold: float = 0.5, resampling: str = "systematic", base: str = "uniform",
                 persistent: bool = False, num_persistent_temperatures: int = 10, seed: int | None = 0,
                 rao_blackwell: bool = True):
        super().__init__(rbm, num_chains, seed, rao_blackwell)
        if resampling not in RESAMPLERS:
            raise ValueError(f"unknown resampling {resampling!r}; use one of {sorted(RESAMPLERS)}")
        self.num_temperatures = num_temperatures
        self.num_sweeps = num_sweeps
        self.resample_threshold = resample_threshold
        self.resampling = resampling
        self.base = base
        self.persistent = persistent
        self.num_persistent_temperatures = num_persistent_temperatures
        self._last: tuple | None = None  # (params, z_left, log_weights, log_z) for warm starts

    def reset(self) -> None:
        """Forget the persistent population: the next call anneals from the base again."""
        super().reset()
        self._last = None

    @torch.no_grad()
    def estimate_log_z(self) -> AnnealingResult:
        """One annealing run; returns the AnnealingResult (log_z, unweighted final population, ...)."""
        params = self._params()
        device = params[2].device
        warm = self.persistent and self._last is not None and self._last[1].shape == (self.num_chains,
                                                                                         self.rbm.n_left)
        if warm:
            start, z_left, log_weights, log_z_start = self._last
            ladder = torch.linspace(0.0, 1.0, self.num_persistent_temperatures + 1, dtype=torch.float64)
        else:
            start = factorial_base(params[0], params[1], self.base)
            z_left = sample_factorial_left(start, self.num_chains, self.generator)
            log_weights = torch.full((self.num_chains,), -math.log(self.num_chains), dtype=torch.float64,
                                     device=device)
            log_z_start = base_log_z(start)
            ladder = torch.linspace(0.0, 1.0, self.num_temperatures, dtype=torch.float64)
        result = anneal(start, params, z_left, log_weights, log_z_start, ladder, self.generator,
                        num_sweeps=self.num_sweeps, resample_threshold=self.resample_threshold,
                        resampling=self.resampling, resample_final=True)
        self.log_z = result.log_z
        if self.persistent:
            snapshot = tuple(p.clone() for p in params)
            self._last = (snapshot, result.z_left, result.log_weights, result.log_z)
        return result

    def sample(self) -> Tensor:
        """Anneal once; the unweighted final population [num_chains, n_units] (also sets self.log_z)."""
        return self.estimate_log_z().samples


class AIS(RBMSampler):
    """Annealed importance sampling of log Z for evaluation: independent chains, no resampling.

    num_chains chains start from the factorial base ('uniform' or the RBM's 'biases'), anneal over
    num_temperatures evenly spaced inverse temperatures from 0 to 1 with num_sweeps Gibbs sweeps at each, and carry
    log w = log Z_base + sum_t [log p*_t(z_left) - log p*_{t-1}(z_left)] with z_right summed out.
    log Z ≈ log mean_i w_i, with the delta-method standard error std(w) / (mean(w) sqrt(N)).
    """

    def __init__(self, rbm: RBM, num_chains: int = 1024, num_temperatures: int = 1000, num_sweeps: int = 1,
                 base: str = "uniform", seed: int | None = 0, rao_blackwell: bool = True):
        super().__init__(rbm, num_chains, seed, rao_blackwell)
        self.num_temperatures = num_temperatures
        self.num_sweeps = num_sweeps
        self.base = base

    @torch.no_grad()
    def estimate_log_z(self) -> AnnealingResult:
        """One AIS run: AnnealingResult with log_z, log_z_std_err and the weighted final chains."""
        params = self._params()
        base = factorial_base(params[0], params[1], self.base)
        z_left = sample_factorial_left(base, self.num_chains, self.generator)
        log_weights = torch.full((self.num_chains,), -math.log(self.num_chains), dtype=torch.float64,
                                 device=params[2].device)
        ladder = torch.linspace(0.0, 1.0, self.num_temperatures, dtype=torch.float64)
        result = anneal(base, params, z_left, log_weights, base_log_z(base), ladder, self.generator,
                        num_sweeps=self.num_sweeps, resample_threshold=0.0)
        self.log_z = result.log_z
        return result

    __call__ = estimate_log_z

    def sample(self) -> Tensor:
        """One AIS run, its final chains resampled by weight to [num_chains, n_units] (also sets self.log_z)."""
        result = self.estimate_log_z()
        index = RESAMPLERS["systematic"](result.log_weights, self.generator)
        return result.samples[index]

"""Restricted Boltzmann machine prior over binary latents z = (z_left, z_right).

E(z) = -a^T z_left - b^T z_right - z_left^T W z_right,   p(z) = exp(-E(z)) / Z.

Summing one side out analytically gives the marginal free energy of the other,
    F(z_left) = -a^T z_left - sum_j softplus(b_j + (z_left W)_j),   p(z_left) = exp(-F(z_left)) / Z,
which is what `exact_log_z` enumerates and what the annealing samplers anneal.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


def enumerate_states(num_units: int, start: int = 0, stop: int | None = None, *, dtype=torch.float64,
                     device=None) -> Tensor:
    """All binary vectors with the integer codes start..stop-1 (bit i = unit i), [stop - start, num_units]."""
    stop = 2**num_units if stop is None else stop
    codes = torch.arange(start, stop, device=device, dtype=torch.int64)
    bits = torch.arange(num_units, device=device, dtype=torch.int64)
    return ((codes[:, None] >> bits) & 1).to(dtype)


def bernoulli_(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """Overwrite `probs` in place with a Bernoulli(probs) sample (1.0/0.0), drawn as the Gibbs sweeps draw
    (``bernoulli_from_words_``: 16-bit uniform words, P(z = 1) within 2^-16 of p)."""
    return bernoulli_from_words_(probs, UniformWords(tuple(probs.shape), device=probs.device).draw(generator))


class RBM(nn.Module):
    """Bipartite Boltzmann machine with learned biases `bias_left` (a), `bias_right` (b) and coupling `weight` (W)."""

    def __init__(self, n_left: int, n_right: int, weight_init_std: float = 0.01, *, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.n_left = n_left
        self.n_right = n_right
        self.bias_left = nn.Parameter(torch.zeros(n_left, **factory))  # a
        self.bias_right = nn.Parameter(torch.zeros(n_right, **factory))  # b
        self.weight = nn.Parameter(torch.randn(n_left, n_right, **factory) * weight_init_std)  # W

    @property
    def n_units(self) -> int:
        return self.n_left + self.n_right

    def extra_repr(self) -> str:
        return f"n_left={self.n_left}, n_right={self.n_right}"

    def split(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z [..., n_left + n_right] -> (z_left [..., n_left], z_right [..., n_right])."""
        return z[..., : self.n_left], z[..., self.n_left :]

    # ----------------------------------------------------------------------------------------------
    # Energies
    # ----------------------------------------------------------------------------------------------
    def energy(self, z: Tensor) -> Tensor:
        """E(z) for binary or relaxed z in [0, 1]^(n_left + n_right), batched over leading dims: [...]."""
        z_left, z_right = self.split(z)
        coupling = ((z_left @ self.weight) * z_right).sum(-1)
        return -(z_left @ self.bias_left) - (z_right @ self.bias_right) - coupling

    def log_prob_unnormalized(self, z: Tensor) -> Tensor:
        """log p(z) + log Z = -E(z), [...]."""
        return -self.energy(z)

    def free_energy_left(self, z_left: Tensor) -> Tensor:
        """F(z_left) = -log sum_{z_right} exp(-E(z)) = -a^T z_left - sum_j softplus(b + z_left W)_j, [...]."""
        return -(z_left @ self.bias_left) - F.softplus(z_left @ self.weight + self.bias_right).sum(-1)

    def free_energy_right(self, z_right: Tensor) -> Tensor:
        """F(z_right) = -b^T z_right - sum_i softplus(a + W z_right)_i, [...]."""
        return -(z_right @ self.bias_right) - F.softplus(z_right @ self.weight.t() + self.bias_left).sum(-1)

    # ----------------------------------------------------------------------------------------------
    # Conditionals, Gibbs and mean field
    # ----------------------------------------------------------------------------------------------
    def logits_right(self, z_left: Tensor) -> Tensor:
        """Logits of p(z_right = 1 | z_left) = b + z_left W, [..., n_right]."""
        return z_left @ self.weight + self.bias_right

    def logits_left(self, z_right: Tensor) -> Tensor:
        """Logits of p(z_left = 1 | z_right) = a + W z_right, [..., n_left]."""
        return z_right @ self.weight.t() + self.bias_left

    @torch.no_grad()
    def sample_right(self, z_left: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """z_right ~ p(z_right | z_left), [..., n_right]."""
        return bernoulli_(torch.sigmoid(self.logits_right(z_left)), generator)

    @torch.no_grad()
    def sample_left(self, z_right: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """z_left ~ p(z_left | z_right), [..., n_left]."""
        return bernoulli_(torch.sigmoid(self.logits_left(z_right)), generator)

    @torch.no_grad()
    def gibbs(self, z_left: Tensor, num_sweeps: int, generator: torch.Generator | None = None,
              inverse_temperature: float = 1.0) -> tuple[Tensor, Tensor]:
        """Block-Gibbs sweeps z_right | z_left then z_left | z_right, in parallel over chains.

        z_left [chains, n_left] is the start; returns the final (z_left, z_right), a joint sample when
        z_left was a sample of the left marginal. `inverse_temperature` scales the whole energy (tempered chains).
        """
        sweeper = GibbsSweeper(z_left.shape[0], self.n_left, self.n_right, device=z_left.device, dtype=z_left.dtype)
        s = inverse_temperature
        sweeper.set_params(self.bias_left.detach() * s, self.bias_right.detach() * s, self.weight.detach(), s)
        return sweeper.run(z_left, num_sweeps, generator)

    def mean_field(self, q_left: Tensor | None = None, num_iterations: int = 50, damping: float = 0.0,
                   tolerance: float = 1e-6) -> tuple[Tensor, Tensor]:
        """Mean-field fixed point q_right = sigmoid(b + q_left W), q_left = sigmoid(a + W q_right).

        Starts from q_left [..., n_left] (default sigmoid(a)); `damping` in [0, 1) keeps that fraction of
        the old q_left each iteration. Stops early when q_left moves less than `tolerance`.
        Differentiable; returns (q_left [..., n_left], q_right [..., n_right]).
        """
        q_left = torch.sigmoid(self.bias_left) if q_left is None else q_left
        q_right = torch.sigmoid(self.logits_right(q_left))
        for _ in range(num_iterations):
            q_left_new = damping * q_left + (1.0 - damping) * torch.sigmoid(self.logits_left(q_right))
            converged = bool((q_left_new - q_left).abs().max() < tolerance)
            q_left = q_left_new
            q_right = torch.sigmoid(self.logits_right(q_left))
            if converged:
                break
        return q_left, q_right

    # ----------------------------------------------------------------------------------------------
    # Exact quantities by enumeration of the smaller side
    # ----------------------------------------------------------------------------------------------
    def _enumeration_side(self) -> tuple[str, int, int]:
        """('left'|'right', size of the enumerated side, size of the summed-out side)."""
        if self.n_left <= self.n_right:
            return "left", self.n_left, self.n_right
        return "right", self.n_right, self.n_left

    def _chunks(self, max_elements: int):
        """Yield float64 states of the smaller side in chunks of about max_elements numbers."""
        side, n_enum, n_other = self._enumeration_side()
        if n_enum > 26:
            raise ValueError(f"exact enumeration of 2^{n_enum} states is not supported (smaller side > 26)")
        chunk = max(1, max_elements // max(n_enum, n_other))
        for start in range(0, 2**n_enum, chunk):
            stop = min(start + chunk, 2**n_enum)
            yield side, enumerate_states(n_enum, start, stop, device=self.weight.device)

    def _free_energy_float64(self, side: str, states: Tensor) -> Tensor:
        """Marginal free energy of the enumerated side in float64 (differentiable in the parameters), [states]."""
        return _enumerated_free_energy(side, states, self.bias_left, self.bias_right, self.weight)

    def exact_log_z(self, max_elements: int = 2**22) -> Tensor:
        """log Z by enumerating the smaller side (float64 scalar, differentiable).

        log Z = logsumexp_{z_s} -F(z_s), accumulated chunk by chunk so memory stays ~max_elements numbers;
        under autograd each chunk is recomputed in backward (checkpointed) instead of being kept.
        """
        params = (self.bias_left, self.bias_right, self.weight)
        chunk_log_zs = []
        for side, states in self._chunks(max_elements):
            if torch.is_grad_enabled() and any(p.requires_grad for p in params):
                chunk_log_zs.append(checkpoint(_chunk_log_z, side, states, *params, use_reentrant=False))
            else:
                chunk_log_zs.append(_chunk_log_z(side, states, *params))
        return torch.logsumexp(torch.stack(chunk_log_zs), dim=0)

    @torch.no_grad()
    def exact_moments(self, max_elements: int = 2**22) -> tuple[Tensor, Tensor]:
        """Exact E[z] [n_units] and E[z z^T] [n_units, n_units] (float64), by enumeration of the smaller side.

        Given an enumerated state s the other side is factorial with means m = sigmoid(logits), so
        E[o o^T | s] = m m^T + diag(m - m^2).
        """
        log_z = self.exact_log_z(max_elements)
        n_enum = min(self.n_left, self.n_right)
        mean = torch.zeros(self.n_units, dtype=torch.float64, device=self.weight.device)
        second = torch.zeros(self.n_units, self.n_units, dtype=torch.float64, device=self.weight.device)
        a, b, w = self.bias_left.double(), self.bias_right.double(), self.weight.double()
        for side, states in self._chunks(max_elements):
            prob = torch.exp(-self._free_energy_float64(side, states) - log_z)  # [states]
            other = torch.sigmoid(states @ w + b if side == "left" else states @ w.t() + a)  # [states, n_other]
            z = torch.cat([states, other], -1) if side == "left" else torch.cat([other, states], -1)
            mean += prob @ z
            second += (z * prob[:, None]).t() @ z
        other_slice = slice(n_enum, None) if side == "left" else slice(0, self.n_left)
        other_mean = mean[other_slice]
        second[other_slice, other_slice] += torch.diag(other_mean - torch.diagonal(second)[other_slice])
        return mean, second


def _enumerated_free_energy(side: str, states: Tensor, bias_left: Tensor, bias_right: Tensor,
                            weight: Tensor) -> Tensor:
    """F of enumerated states [states, n_side] of one side, the other summed out, in float64: [states]."""
    a, b, w = bias_left.double(), bias_right.double(), weight.double()
    if side == "left":
        return -(states @ a) - F.softplus(states @ w + b).sum(-1)
    return -(states @ b) - F.softplus(states @ w.t() + a).sum(-1)


def _chunk_log_z(side: str, states: Tensor, bias_left: Tensor, bias_right: Tensor, weight: Tensor) -> Tensor:
    """logsumexp of -F over one chunk of enumerated states (float64 scalar)."""
    return torch.logsumexp(-_enumerated_free_energy(side, states, bias_left, bias_right, weight), dim=0)


UNIFORM_LEVELS = 2**16  # a Bernoulli draw compares p * 2^16 with a 16-bit uniform integer
_HALF_LEVELS_BELOW = torch.tensor(-(UNIFORM_LEVELS // 2), dtype=torch.float32)  # a 0-dim (CPU scalar) tensor


class UniformWords:
    """A reused buffer of 16-bit uniform integers (``torch.int16``, signed: CUDA compares them too) of a
    given shape, refilled four to a full-range 64-bit draw of a generator: a quarter of
    ``torch.rand``'s calls of the generator, which is serial on the CPU."""

    def __init__(self, shape: tuple[int, ...], *, device=None):
        count = math.prod(shape)
        self.bits = torch.empty((count + 3) // 4, dtype=torch.int64, device=device)
        self.words = self.bits.view(torch.int16)[:count].view(shape)

    def draw(self, generator: torch.Generator | None) -> Tensor:
        """Fresh independent words, uniform on {-2^15, …, 2^15 - 1}, in the buffer (returned)."""
        self.bits.random_(-(2**63), None, generator=generator)
        return self.words


def bernoulli_from_words_(probs: Tensor, words: Tensor) -> Tensor:
    """Overwrite ``probs`` in place with Bernoulli draws (1.0/0.0): z = [s < 2^16 p - 2^15], s uniform
    on the signed 16-bit integers (``UniformWords``). P(z = 1) = p rounded to a multiple of 2^-16:
    exact at p = 0 and p = 1, within 2^-16 of p elsewhere (tests/test_rbm.py counts it over all 2^16
    words)."""
    shifted = torch.add(_HALF_LEVELS_BELOW, probs, alpha=UNIFORM_LEVELS, out=probs)  # 2^16 p - 2^15, one pass
    return shifted.gt_(words)


class GibbsSweeper:
    """Preallocated block-Gibbs kernel for [chains] chains of an RBM with parameters (a, b, scale * W).

    Sampling compares 2^16 sigmoid(logits) with 16-bit uniform integers, four of them from each 64-bit
    draw of the given generator (``bernoulli_from_words_``: the probability is rounded to a multiple
    of 2^-16). The logits go through ``torch.addmm`` into buffers that are reused, so a sweep
    allocates nothing. The returned z tensors are those buffers: clone them before the next sweep if
    they must be kept.
    """

    def __init__(self, num_chains: int, n_left: int, n_right: int, *, device=None, dtype=None):
        factory = {"device": device, "dtype": dtype}
        self.z_left = torch.empty(num_chains, n_left, **factory)  # [chains, n_left]
        self.z_right = torch.empty(num_chains, n_right, **factory)  # [chains, n_right]
        self.words_left = UniformWords((num_chains, n_left), device=device)
        self.words_right = UniformWords((num_chains, n_right), device=device)
        self.generator: torch.Generator | None = None

    def set_params(self, bias_left: Tensor, bias_right: Tensor, weight: Tensor, scale: float = 1.0) -> None:
        """Sample from the RBM with biases (a, b) and coupling scale * W (detached tensors)."""
        self.bias_left, self.bias_right, self.scale = bias_left, bias_right, scale
        self.weight, self.weight_t = weight, weight.t()

    def _draw(self, probs: Tensor, words: UniformWords) -> Tensor:
        return bernoulli_from_words_(probs, words.draw(self.generator))

    def right_from_logits(self, logits: Tensor) -> Tensor:
        """z_right ~ Bernoulli(sigmoid(logits)), [chains, n_right] (buffer)."""
        return self._draw(torch.sigmoid(logits, out=self.z_right), self.words_right)

    def sweep_right(self, z_left: Tensor) -> Tensor:
        """z_right ~ p(z_right | z_left), logits b + scale * z_left W, [chains, n_right] (buffer)."""
        torch.addmm(self.bias_right, z_left, self.weight, alpha=self.scale, out=self.z_right)
        return self._draw(self.z_right.sigmoid_(), self.words_right)

    def sweep_left(self, z_right: Tensor) -> Tensor:
        """z_left ~ p(z_left | z_right), logits a + scale * W z_right, [chains, n_left] (buffer)."""
        torch.addmm(self.bias_left, z_right, self.weight_t, alpha=self.scale, out=self.z_left)
        return self._draw(self.z_left.sigmoid_(), self.words_left)

    def run(self, z_left: Tensor, num_sweeps: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """num_sweeps sweeps (z_right | z_left, then z_left | z_right) from z_left; returns (z_left, z_right) buffers.

        With num_sweeps = 0 only z_right is drawn, so the pair is still a joint sample given z_left.
        """
        self.generator = generator
        if num_sweeps == 0:
            self.z_left.copy_(z_left)
            self.sweep_right(self.z_left)
            return self.z_left, self.z_right
        current = z_left
        for _ in range(num_sweeps):
            current = self.sweep_left(self.sweep_right(current))
        return self.z_left, self.z_right

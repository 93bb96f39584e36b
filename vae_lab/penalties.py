"""Extra loss terms on a model's latents, chosen by ``penalty=`` (conf/penalty/) and weighted by
``objective.weights.<name>``: a penalty is a callable ``(Encoding, prior) -> [batch]`` that the model's
``pack_log_weights`` adds to ``LogWeights.terms`` (vae_lab/objectives.py). A penalty with ``uses_decoder``
is called ``(Encoding, prior, DecoderTargets)``: the family hands it what its decoder should emit for the
batch and a way to score that under other latents; it may return None (no term on this batch)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from vae_lab.densities import diagonal_component_log_probs
from vae_lab.errors import ConfigError

KERNELS = ("imq", "rbf")
ASSIGNMENTS = ("posterior", "nearest_mean")


class MMD:
    """The maximum mean discrepancy between the aggregate posterior q(z) and the prior p(z) (InfoVAE, Zhao
    et al. 2019; WAE-MMD, Tolstikhin et al. 2018): the batch's posterior draws z_i (n = k × batch of them,
    samples of q(z)) against n prior draws, unbiased,

        MMD² = 1/(n(n-1)) Σ_{i≠j} [κ(z_i, z_j) + κ(y_i, y_j)] - 2/n² Σ_{i,j} κ(z_i, y_j),

    with κ the inverse multiquadratics kernel Σ_s C_s / (C_s + ‖x - y‖²) (``imq``) or the Gaussian
    exp(-‖x - y‖² / C_s) summed over scales (``rbf``), C_s = 2 · dim · s for the ``scales`` s. Matching
    q(z) to p(z) this way leaves each q(z|x) free to stay sharp, so the latent keeps its information
    while draws from p(z) land where the codes of real data lie. Returns ``[batch]``: the estimate for
    every example (its batch mean is the estimate)."""

    def __init__(self, kernel: str = "imq", scales: Sequence[float] = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)):
        if kernel not in KERNELS:
            raise ValueError(f"penalties.mmd.kernel={kernel!r}: allowed values are {list(KERNELS)}")
        if not scales or any(float(s) <= 0 for s in scales):
            raise ValueError(f"penalties.mmd.scales={list(scales)}: give one or more scales > 0")
        self.kernel, self.scales = kernel, tuple(float(s) for s in scales)

    def _kernel(self, distances: Tensor, dim: int) -> Tensor:
        """κ from squared distances ``[n, m]``."""
        total = torch.zeros_like(distances)
        for scale in self.scales:
            c = 2.0 * dim * scale
            total = total + (c / (c + distances) if self.kernel == "imq" else torch.exp(-distances / c))
        return total

    def estimate(self, z: Tensor, y: Tensor) -> Tensor:
        """The unbiased MMD² (a scalar) between the rows of ``z`` and ``y`` ``[n, dim]``."""
        n, dim = z.shape
        if n < 2:
            return z.new_zeros(())
        within = self._kernel(torch.cdist(z, z).pow(2), dim) + self._kernel(torch.cdist(y, y).pow(2), dim)
        off_diagonal = within.sum() - within.diagonal().sum()
        across = self._kernel(torch.cdist(z, y).pow(2), dim).sum()
        return off_diagonal / (n * (n - 1)) - 2.0 * across / (n * n)

    def __call__(self, encoding, prior) -> Tensor:
        z = encoding.latents.reshape(-1, encoding.latents.shape[-1])  # [k batch, dim], draws of q(z)
        with torch.no_grad():
            y = prior.sample(z.shape[0]).to(z.device, z.dtype)  # [k batch, dim], draws of p(z)
        return self.estimate(z, y).expand(encoding.batch_size)


@dataclass
class DecoderTargets:
    """What a family's decoder emits for each example of a batch, for a penalty that decodes latents of its
    own: ``tensors`` by name, ``[batch, ...]`` each and of a fixed width (text padded to the family's
    maximum length), so that batches can be stacked; ``nll(z, tensors) -> [n]`` the decoder's -log p(x|z)
    of those targets (rows of ``tensors``) under latents ``z`` ``[n, dim]``; ``training``: the model is in
    training mode."""

    tensors: dict[str, Tensor]
    nll: Callable[[Tensor, dict[str, Tensor]], Tensor]
    training: bool


class PriorDecoding:
    """Decode draws of the prior as the training examples whose posteriors hold them.

    A posterior sharp enough to carry a word's spelling (many nats of KL) leaves most of N(0, I) outside every
    training example's q(z|x): the aggregate posterior has holes, since its KL to the prior is at least
    E KL(q(z|x) || p(z)) - log N for N examples. A decoder that spells decodes a draw from a hole to an
    invented word. This term teaches the decoder what the holes mean: n = batch draws z_j ~ p(z), each
    paired with a training example i drawn from the encoder's inverse over a queue of the ``queue``
    latest training examples,

        i ~ q(i | z_j) ∝ q(z_j | x_i)     (the posterior over which example a draw belongs to),

    and the term is the decoder's -log p(y_i | z_j) of that example's target y_i, one per draw. Its
    expectation is E_{z ~ p(z)} E_{i ~ q(i|z)} [-log p(y_i | z)]: the ELBO's reconstruction term with z
    taken from the prior and the example from the encoder's inverse instead of the other way round, so a
    draw that no posterior claims outright is decoded as the example that claims it most (vae_lab's own
    term; the measured trade-off on the verb-tense CVAE is in the README). Only the decoder learns from it
    (the draws and the queue carry no gradient). The queue holds detached posterior parameters and targets
    of recent training batches (the current batch is pushed after the term is made); it is empty after a
    resume. The term is 0 until ``min_filled`` examples are in it, and for the first ``start`` training
    batches this process sees (a decoder trained first without it; counted again from 0 after a resume).
    In evaluation it is absent and the queue is not fed. Gaussian posteriors only (``mean``, ``log_var``).

    ``assignment``: ``posterior`` draws the example ∝ q(z_j | x_i), the encoder's inverse; wide posteriors
    (short words) then claim most of the prior's holes, so the draws decode to few verbs. ``nearest_mean``
    takes the example whose posterior mean is nearest (Voronoi cells: every example claims its share)."""

    uses_decoder = True

    def __init__(self, queue: int = 8192, min_filled: int = 256, assignment: str = "posterior",
                 draws: int | None = None, start: int = 0):
        if int(queue) < 1 or int(min_filled) < 1 or (draws is not None and int(draws) < 1) or int(start) < 0:
            raise ValueError(f"penalties.prior_decoding: queue={queue}, min_filled={min_filled} and draws={draws} "
                             f"must be >= 1, start={start} >= 0")
        self.draws, self.start, self.calls = None if draws is None else int(draws), int(start), 0
        if assignment not in ASSIGNMENTS:
            raise ValueError(f"penalties.prior_decoding.assignment={assignment!r}: allowed values are {list(ASSIGNMENTS)}")
        self.assignment = assignment
        self.capacity, self.min_filled = int(queue), min(int(min_filled), int(queue))
        self.means = self.log_vars = None
        self.tensors: dict[str, Tensor] = {}
        self.filled = self.position = 0

    def push(self, means: Tensor, log_vars: Tensor, tensors: dict[str, Tensor]) -> None:
        """Add examples (detached) to the queue, the oldest overwritten first."""
        if self.means is None:
            self.means = means.new_zeros(self.capacity, means.shape[-1])
            self.log_vars = means.new_zeros(self.capacity, means.shape[-1])
            self.tensors = {k: v.new_zeros(self.capacity, *v.shape[1:]) for k, v in tensors.items()}
        rows = (self.position + torch.arange(means.shape[0], device=means.device)) % self.capacity
        self.means[rows], self.log_vars[rows] = means.detach(), log_vars.detach()
        for k, v in tensors.items():
            self.tensors[k][rows] = v.detach()
        self.position = int(rows[-1] + 1) % self.capacity
        self.filled = min(self.capacity, self.filled + means.shape[0])

    def log_densities(self, z: Tensor) -> Tensor:
        """log q(z_j | x_i) ``[n, filled]`` of draws ``z`` ``[n, dim]`` under the queued posteriors."""
        return diagonal_component_log_probs(z, self.means[: self.filled], self.log_vars[: self.filled])

    def assign(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """For draws ``z`` ``[n, dim]``, queue rows ``[n]``: drawn with probability ∝ q(z_j | x_i)
        (``posterior``), or the row whose posterior mean is nearest (``nearest_mean``)."""
        if self.assignment == "nearest_mean":
            return torch.cdist(z, self.means[: self.filled]).argmin(-1)
        weights = self.log_densities(z).softmax(-1)
        return torch.multinomial(weights, 1, generator=generator).squeeze(-1)

    def __call__(self, encoding, prior, targets: DecoderTargets) -> Tensor | None:
        if not targets.training:
            return None
        params = encoding.joined
        if not hasattr(params, "log_var"):
            raise ConfigError("penalty=prior_decoding: needs a Gaussian posterior (posterior=gaussian)")
        term = params.mean.new_zeros(encoding.batch_size)
        self.calls += 1
        if self.filled >= self.min_filled and self.calls > self.start:
            draws = self.draws or encoding.batch_size
            with torch.no_grad():
                z = prior.sample(draws).to(params.mean.device, params.mean.dtype)
                rows = self.assign(z)
            # the mean over the draws, per example of the batch (its batch mean is the term)
            term = term + targets.nll(z, {k: v[rows] for k, v in self.tensors.items()}).mean()
        self.push(params.mean, params.log_var, targets.tensors)
        return term


__all__ = ["KERNELS", "MMD", "DecoderTargets", "PriorDecoding"]

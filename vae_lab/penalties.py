"""Extra loss terms on a model's latents, chosen by ``penalty=`` (conf/penalty/) and weighted by
``objective.weights.<name>``: a penalty is a callable ``(Encoding, prior) -> [batch]`` that the model's
``pack_log_weights`` adds to ``LogWeights.terms`` (vae_lab/objectives.py)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

KERNELS = ("imq", "rbf")


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


__all__ = ["KERNELS", "MMD"]

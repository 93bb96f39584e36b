"""Vector-quantised posteriors (VQ-VAE, van den Oord, Vinyals & Kavukcuoglu 2017): the encoder's output
z_e(x) is cut into ``positions`` vectors of ``code_dim`` and each is replaced by its nearest of K learned
codes e_1..e_K; q(z|x) is the point mass on that choice.

The decoder sees z_q(x), with the straight-through gradient z_e + sg(z_q - z_e) to the encoder. The codes
learn through the codebook loss ‖sg(z_e) - z_q‖² and the encoder is held near them by the commitment loss
‖z_e - sg(z_q)‖² (weighted 0.25 in the paper): both are extra loss terms of the regulariser cell,
``codebook`` and ``commitment`` (``objective.weights``). Under a uniform prior over the codes the KL is
the constant ``positions · log K``: the ELBO is log p(x|z_q) - positions log K, a bound on log p(x), and
with a deterministic q every importance sample is the same, so the test NLL is that bound.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vae_lab.devices import generator_on
from vae_lab.errors import ConfigError


class CodeParams:
    """The encoder outputs z_e ``[n, positions · code_dim]`` of n examples (the parameters of a point mass)."""

    def __init__(self, encoded: Tensor, code_dim: int, codes: Tensor):
        self.encoded, self.code_dim, self.codes = encoded, code_dim, codes  # codes: [K, code_dim], at the time

    @classmethod
    def cat(cls, groups: list["CodeParams"]) -> "CodeParams":
        return cls(torch.cat([g.encoded for g in groups], dim=-1), groups[0].code_dim, groups[0].codes)

    def pack(self) -> Tensor:
        return self.encoded

    def unpack(self, packed: Tensor) -> "CodeParams":
        return CodeParams(packed, self.code_dim, self.codes)

    def indices(self) -> Tensor:
        """The nearest code of each position ``[n, positions]``."""
        vectors = self.encoded.reshape(-1, self.code_dim)  # [n positions, code_dim]
        nearest = torch.cdist(vectors, self.codes.to(vectors.dtype)).argmin(-1)
        return nearest.view(self.encoded.shape[0], -1)

    def means(self) -> Tensor:
        """E_q[z | x] = z_q(x) ``[n, positions · code_dim]``."""
        return self.codes.to(self.encoded.dtype)[self.indices()].flatten(-2)

    @torch.no_grad()
    def mutual_information(self, generator: torch.Generator | None = None) -> float:
        """I(x; z) = H(z) for a deterministic encoder: the plug-in entropy of the code tuples of the n
        examples (at most log n)."""
        _, counts = torch.unique(self.indices(), dim=0, return_counts=True)
        p = counts.double() / counts.sum()
        return float(-(p * p.log()).sum())


class VectorQuantizedPosterior(nn.Module):
    """q(z|x): the nearest of ``codebook_size`` codes of ``code_dim`` at each of ``latent_dim / code_dim``
    positions (``posterior=vq``; its prior: ``prior=codes``, uniform over the codes). The codes start
    uniform in ±1/K (the paper's code)."""

    kind = "vq"  # its row in the regulariser table
    num_params = 1

    def __init__(self, latent_dim: int, codebook_size: int = 32, code_dim: int = 10, seed: int = 0,
                 in_features: int | None = None):
        super().__init__()
        if code_dim < 1 or latent_dim % code_dim:
            raise ConfigError(f"posterior.code_dim={code_dim}: the model's {latent_dim} latents must split into "
                              "positions of code_dim; pick a code_dim dividing the latent count")
        if codebook_size < 2:
            raise ConfigError(f"posterior.codebook_size={codebook_size}: give at least 2 codes")
        self.latent_dim, self.code_dim, self.codebook_size = latent_dim, code_dim, codebook_size
        self.positions = latent_dim // code_dim
        generator = generator_on("cpu", seed)  # the codes start on the host and move with the model
        start = (torch.rand(codebook_size, code_dim, generator=generator) * 2.0 - 1.0) / codebook_size
        self.codebook = nn.Parameter(start)
        if in_features is not None:
            self.to_params = nn.Linear(in_features, latent_dim)

    @property
    def row(self) -> str:
        return self.kind

    def forward(self, features: Tensor) -> CodeParams:
        return CodeParams(self.to_params(features), self.code_dim, self.codebook)

    def params(self, outputs: Tensor) -> CodeParams:
        """z_e from a net's outputs ``[n, 1, dim]``."""
        return CodeParams(outputs[:, 0], self.code_dim, self.codebook)

    def quantised(self, params: CodeParams) -> Tensor:
        """z_q(x) ``[n, dim]``, differentiable in the codes (not in z_e)."""
        return self.codebook[params.indices()].flatten(-2)

    def draw(self, params: CodeParams, num_samples: int = 1, relaxed: bool = True, offset: int = 0) -> Tensor:
        """``[k, n, dim]``: z_q(x) with the straight-through gradient to z_e, the same for every k."""
        z_e = params.encoded
        z = z_e + (self.quantised(params) - z_e).detach()
        return z.unsqueeze(0).expand(num_samples, *z.shape)

    def log_q(self, z: Tensor, params: CodeParams, relaxed: bool = True, offset: int = 0) -> Tensor:
        """log q(z|x) = 0 at the chosen codes ``[..., dim] -> [...]`` (a point mass)."""
        return torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)

    def quantisation_losses(self, params: CodeParams) -> tuple[Tensor, Tensor]:
        """(codebook ‖sg(z_e) - z_q‖², commitment ‖z_e - sg(z_q)‖²), each summed over the latents ``[n]``."""
        z_e, z_q = params.encoded, self.quantised(params)
        return (z_e.detach() - z_q).pow(2).sum(-1), (z_e - z_q.detach()).pow(2).sum(-1)

    def code_perplexity(self, params: CodeParams) -> Tensor:
        """exp of the entropy of the batch's code use (K if every code is used equally; 1 if one code) ``[n]``."""
        counts = F.one_hot(params.indices().flatten(), self.codebook_size).double().mean(0)
        entropy = -(counts * counts.clamp_min(1e-12).log()).sum()
        return entropy.exp().to(params.encoded.dtype).expand(params.encoded.shape[0])

    def kl_to_uniform(self) -> float:
        """KL(q || uniform over codes) = positions · log K for a point mass."""
        return self.positions * math.log(self.codebook_size)

    def point(self, params: CodeParams) -> Tensor:
        return self.quantised(params)

    def lookup(self, indices: Tensor) -> Tensor:
        """The latents ``[n, dim]`` of code indices ``[n, positions]`` (the prior's draws)."""
        return self.codebook.detach()[indices].flatten(-2)

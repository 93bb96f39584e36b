"""VAEs of binary images with a hierarchical posterior over groups of latents: DVAE, DVAE++, DVAE# and
the Gaussian baseline, one class assembled from parts (configs differ, classes do not).

Parts (conf/model/*.yaml, conf/struct/*.yaml, conf/prior/):
- ``struct``: ``num_groups`` groups of ``group_size`` latents; each group's encoder q(z_i | x, ζ_<i) is
  a ``FeedForward`` of ``hidden_layers`` × ``hidden_units`` (dense → batch norm → tanh) on
  [x - mean(x), ζ_1, …, ζ_{i-1}]; the decoder p(x | ζ) one such net on all latents, its output bias
  starting at the logit of the training pixel mean (Vahdat et al.'s reference nets).
- ``relaxation`` (vae_lab/posteriors/smoothing.py): how a binary unit is smoothed in training:
  spike-and-exponential (DVAE), overlapping exponential / power (DVAE++), overlapping Gaussian,
  exponential, uniform+exponential, power or the Gaussian-integral mixture (DVAE#); ``null`` with
  ``kl_term=gaussian`` is the Gaussian-latent baseline (``vae_mlp``).
- ``prior`` (conf/prior/): the RBM (vae_lab/priors/rbm_prior.py) split in halves (units 1..n/2 |
  n/2+1..n), or N(0, I) for the baseline.
- ``kl_term``: how the regulariser is scored on the relaxed ζ in training:
  ``dvaepp`` the analytic cross-entropy with the RBM minus the posterior entropy (DVAE++ eq. 9: the
  left half's means perturbed by log r(ζ|1)/r(ζ|0) for hierarchical posteriors, zero for one group);
  ``dvae`` the same for one group, Rolfe's gradient surrogate (DVAE eqs. 11-12) for several;
  ``mean_field`` log q(ζ|x) - log p(ζ) with the DVAE# mean-field relaxed prior; ``gaussian_integral``
  the same with the Gaussian-integral-trick prior; ``gaussian`` the analytic KL to N(0, I).
In evaluation every binary family uses binary z from the factorial Bernoulli posteriors (each group's
logits given the binary draws before it), the discrete RBM and its AIS log Z (DVAE# evaluation).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vae_lab.errors import ConfigError
from vae_lab.models.base import LatentVariableModel
from vae_lab.nets.mlp import FeedForward
from vae_lab.objectives import LogWeights
from vae_lab.outputs import ImageOutput
from vae_lab.posteriors.bernoulli import BernoulliParams
from vae_lab.posteriors.gaussian import GaussianParams, GaussianPosterior
from vae_lab.posteriors.bernoulli import bernoulli_entropy, bernoulli_log_prob, bernoulli_sample
from vae_lab.priors.relaxed import (gaussian_integral_lambda, gaussian_integral_log_marginal,
                                    mean_field_log_marginal)

KL_TERMS = ("dvae", "dvaepp", "mean_field", "gaussian_integral", "gaussian")


class ImageVAE(LatentVariableModel):
    """Hierarchical-posterior VAE of binary images (see the module docstring for the parts)."""

    def __init__(self, num_pixels: int, image_shape: tuple[int, int], pixel_mean: Tensor,
                 prior: Callable[..., nn.Module], struct: dict, kl_term: str, relaxation=None,
                 weight_decay: float = 1e-4, name: str = "", beta: float | None = None):
        super().__init__()
        if kl_term not in KL_TERMS:
            raise ConfigError(f"model.kl_term={kl_term}: allowed values are {list(KL_TERMS)}")
        if (relaxation is None) != (kl_term == "gaussian"):
            raise ConfigError(f"model.relaxation: binary latents need one and kl_term=gaussian none "
                              f"(model {name}, kl_term={kl_term})")
        self.name, self.kl_term, self.relaxation, self.weight_decay = name, kl_term, relaxation, weight_decay
        self.image_shape = tuple(image_shape)
        self.num_groups, self.group_size = int(struct["num_groups"]), int(struct["group_size"])
        self.num_latents = self.num_groups * self.group_size
        params_per_unit = 2 if kl_term == "gaussian" else relaxation.num_params
        hidden = dict(hidden_units=int(struct["hidden_units"]), hidden_layers=int(struct["hidden_layers"]))
        self.encoders = nn.ModuleList(
            FeedForward(num_pixels + i * self.group_size, out_features=params_per_unit * self.group_size, **hidden)
            for i in range(self.num_groups))
        self.decoder = FeedForward(self.num_latents, out_features=num_pixels, **hidden)
        mean = pixel_mean.float().clamp(1e-3, 1 - 1e-3)
        self.register_buffer("pixel_mean", pixel_mean.float().clone())
        self.register_buffer("output_bias", torch.log(mean) - torch.log1p(-mean))  # logit of the pixel mean
        if params_per_unit == 2 and kl_term != "gaussian":  # DVAE# Gaussian integral: a learned scale a unit
            self.sigma_raw = nn.Parameter(torch.ones(self.num_latents))
        if kl_term == "gaussian":
            self.prior = prior(latent_dim=self.num_latents)
        else:
            self.prior = prior(n_left=self.num_latents // 2, n_right=self.num_latents - self.num_latents // 2)
        self.minimum_lambda = beta  # the Gaussian integral's λ floor is the sharpness β (DVAE#)

    # ------------------------------------------------------------------ parts of one pass
    def _encode_groups(self, pixels: Tensor, relaxed: bool, repeats: int = 1) -> tuple[list[Tensor], list[Tensor]]:
        """Per group: the encoder's output ``[k n, params, group]`` and the draw ``[k n, group]`` (relaxed ζ
        in training, binary z in evaluation; Gaussian z for the baseline), for k = ``repeats`` draws
        per image (k-major). The first group depends on x alone, so its net runs once per image (batch
        norm sees the same statistics as on the k-fold repeated batch)."""
        inputs = pixels - self.pixel_mean
        first = self.encoders[0](inputs).view(pixels.shape[0], -1, self.group_size).repeat(repeats, 1, 1)
        inputs = inputs.repeat(repeats, 1)
        outputs, draws = [first], [self._draw(first, 0, relaxed)]
        for i, encoder in enumerate(self.encoders[1:], start=1):
            out = encoder(torch.cat([inputs, *draws], dim=-1)).view(inputs.shape[0], -1, self.group_size)
            outputs.append(out)
            draws.append(self._draw(out, i, relaxed))
        return outputs, draws

    def _mixture_params(self, out: Tensor, group: int) -> tuple[Tensor, Tensor]:
        """The Gaussian-integral mixture's scale σ ``[group]`` (as DVAE#'s reference: |0.2 s_raw| + 0.05,
        s_raw from 1) and shift δμ ``[n, group]`` (from the encoder's second output)."""
        raw = self.sigma_raw[group * self.group_size:(group + 1) * self.group_size]
        return 0.2 * raw.abs() + 0.05, self.relaxation.shift(out[:, 1])

    def _draw(self, out: Tensor, group: int, relaxed: bool) -> Tensor:
        logits = out[:, 0]
        if self.kl_term == "gaussian":
            return GaussianPosterior.rsample(logits, out[:, 1], 1)[0]
        if not relaxed:
            return bernoulli_sample(logits)
        if self.kl_term == "gaussian_integral":
            return self.relaxation.rsample(logits, *self._mixture_params(out, group))
        return self.relaxation.rsample(logits)

    def _relaxed_log_q(self, outputs: list[Tensor], draws: list[Tensor]) -> Tensor:
        """log q(ζ|x) of the relaxed draws, summed over all units ``[n]``."""
        total = 0.0
        for group, (out, zeta) in enumerate(zip(outputs, draws)):
            if self.kl_term == "gaussian_integral":
                log_q = self.relaxation.log_prob(zeta, out[:, 0], *self._mixture_params(out, group))
            else:
                log_q = self.relaxation.log_prob(zeta, out[:, 0])
            total = total + log_q.sum(-1)
        return total

    def decoder_logits(self, latents: Tensor) -> Tensor:
        """Pixel logits ``[n, pixels]`` of p(x|ζ)."""
        return self.decoder(latents) + self.output_bias

    # ------------------------------------------------------------------ regularisers in training
    def _dvaepp_kl(self, logits: Tensor, zetas: list[Tensor], log_z: Tensor) -> Tensor:
        """DVAE++: E_q[E(z)] + log Z - H(q) per row ``[n]``; the left half's means are perturbed by
        log r(ζ|1) - log r(ζ|0) of the sampled ζ when the posterior is hierarchical."""
        rbm = self.prior.rbm
        q_left, q_right = rbm.split(torch.sigmoid(logits))  # [n, n_left], [n, n_right]
        coupled_left = q_left  # ν_left: the means the coupling term sees
        if self.num_groups > 1:
            log_ratio = self.relaxation.log_ratio(torch.cat(zetas, dim=-1))
            coupled_left = torch.sigmoid(rbm.split(logits)[0] + rbm.split(log_ratio)[0])
        cross_entropy = (-(q_left @ rbm.bias_left) - q_right @ rbm.bias_right
                         - ((coupled_left @ rbm.weight) * q_right).sum(-1) + log_z)
        return cross_entropy - bernoulli_entropy(logits).sum(-1)

    def _rolfe_kl(self, logits: Tensor, zetas: list[Tensor]) -> Tensor:
        """DVAE (Rolfe 2016, eqs. 11-12) for hierarchical posteriors: a surrogate whose gradient is the
        KL's (its value is not the KL). Earlier groups enter as binary z = [ζ > 0], the last group by
        its means; ``prior.sampler`` supplies the RBM's negative phase."""
        rbm = self.prior.rbm
        probs = torch.sigmoid(logits.clamp(-88.0, 88.0))
        last = self.num_groups - 1
        binary = [(zeta > 0).to(logits.dtype) for zeta in zetas[:last]] + [probs[:, last * self.group_size:]]
        samples = torch.cat(binary, dim=-1).detach()  # [n, units]
        left, right = rbm.split(samples)
        bias = torch.cat([rbm.bias_left, rbm.bias_right])
        coupled = torch.cat([right @ rbm.weight.t(), left @ rbm.weight], dim=-1)  # [n, units]
        capped = probs.clamp(max=0.999)
        scale = (1.0 - samples) / (1.0 - capped)
        scale = torch.cat([rbm.split(scale)[0], torch.ones_like(right)], dim=-1)
        posterior_part = ((logits - bias - coupled * scale).detach() * capped).sum(-1)
        positive = -(((left @ rbm.weight) * right).sum(-1) + probs.detach() @ bias).mean()
        negative = -self.prior.rbm.energy(self.prior.sampler.sample().detach()).mean()
        return posterior_part + positive + negative

    # ------------------------------------------------------------------ the family interface
    def log_weights(self, batch: dict, num_samples: int = 1, encoded=None) -> LogWeights:
        """log p(x|ζ) + log p(ζ) - log q(ζ|x) ``[k, batch]`` for k draws per image. Training: relaxed ζ and the
        model's ``kl_term``; evaluation: binary z, the discrete RBM with its AIS log Z. ``encoded`` is
        unused: each group's posterior depends on the draws of the groups before it, so every draw
        goes through the encoder."""
        pixels = batch["pixels"]
        size = pixels.shape[0]
        repeated = pixels.repeat(num_samples, 1)  # [k batch, pixels], k-major
        outputs, draws = self._encode_groups(pixels, relaxed=self.training, repeats=num_samples)
        latents = torch.cat(draws, dim=-1)  # [k batch, units]
        log_likelihood = -F.binary_cross_entropy_with_logits(self.decoder_logits(latents), repeated,
                                                            reduction="none").sum(-1)
        logits = torch.cat([out[:, 0] for out in outputs], dim=-1)  # [k batch, units]
        analytic_kl = kl_per_dim = None
        if self.kl_term == "gaussian":
            log_var = torch.cat([out[:, 1] for out in outputs], dim=-1)
            prior = self.prior.log_prob(latents)
            posterior = GaussianPosterior.log_prob(latents, logits, log_var)
            kl_per_dim = GaussianPosterior.kl_per_dim(logits, log_var).view(num_samples, size, -1).mean(0)
        elif not self.training:
            prior = self.prior.log_prob(latents)
            posterior = bernoulli_log_prob(latents, logits).sum(-1)
        elif self.kl_term in ("dvaepp", "dvae"):
            if self.kl_term == "dvae" and self.num_groups > 1:
                kl = self._rolfe_kl(logits, draws)
            else:
                kl = self._dvaepp_kl(logits, draws, self.prior.log_z_train())
            analytic_kl = kl.view(num_samples, size).mean(0)
            prior, posterior = -kl, torch.zeros_like(kl)  # log w with the KL in place of log q - log p
        else:
            if self.kl_term == "mean_field":
                log_marginal = mean_field_log_marginal(self.prior.rbm, latents, self.relaxation.smoothing.log_pdf)
            else:
                lam = gaussian_integral_lambda(self.prior.rbm, float(self.minimum_lambda or 0.0))
                log_marginal = gaussian_integral_log_marginal(self.prior.rbm, latents, lam)
            prior = log_marginal - self.prior.log_z_train()
            posterior = self._relaxed_log_q(outputs, draws)
        view = (num_samples, size)
        return LogWeights(log_likelihood=log_likelihood.view(view), prior=prior.view(view),
                          posterior=posterior.view(view), kl_per_dim=kl_per_dim, analytic_kl=analytic_kl)

    def regularizer(self) -> Tensor:
        """Weight decay · ½‖·‖² on the nets' kernels and batch-norm scales (and the RBM's W)."""
        kernels = [w for net in [*self.encoders, self.decoder] for w in net.kernels()]
        return self.weight_decay * 0.5 * sum(w.pow(2).sum() for w in kernels) + self.prior.regularizer()

    @torch.no_grad()
    def encode(self, batch: dict):
        """The posteriors' parameters: Bernoulli logits of each group given the binary draws before it
        (Gaussian means and log-variances for the baseline), ``[batch, units]``."""
        outputs, _ = self._encode_groups(batch["pixels"], relaxed=False)
        logits = torch.cat([out[:, 0] for out in outputs], dim=-1)
        if self.kl_term == "gaussian":
            return GaussianParams(logits, torch.cat([out[:, 1] for out in outputs], dim=-1))
        return BernoulliParams(logits)

    @torch.no_grad()
    def sample_outputs(self, num_samples: int, generator: torch.Generator | None = None) -> ImageOutput:
        """Pixel probabilities of the decoded prior draws (the RBM sampler's chains, or N(0, I))."""
        z = self.prior.sample(num_samples, generator).to(self.output_bias.device, self.output_bias.dtype)
        return ImageOutput(torch.sigmoid(self.decoder_logits(z)).view(-1, *self.image_shape))

    @torch.no_grad()
    def reconstruction_outputs(self, batch: dict) -> ImageOutput:
        """Up to 10 test images (first row) over their reconstructions' pixel probabilities (second)."""
        pixels = batch["pixels"][:10]
        _, draws = self._encode_groups(pixels, relaxed=False)
        recon = torch.sigmoid(self.decoder_logits(torch.cat(draws, dim=-1)))
        return ImageOutput(torch.cat([pixels, recon]).view(-1, *self.image_shape), columns=len(pixels))

"""VAEs of binary images with a hierarchical posterior over groups of latents: DVAE, DVAE++, DVAE# and
the Gaussian baseline, one class assembled from parts (configs differ, classes do not).

Parts (conf/model/*.yaml, conf/struct/*.yaml, conf/posterior/, conf/prior/):
- ``struct``: ``num_groups`` groups of ``group_size`` latents; each group's encoder q(z_i | x, ζ_<i) is
  a ``FeedForward`` of ``hidden_layers`` × ``hidden_units`` (dense → batch norm → tanh) on
  [x - mean(x), ζ_1, …, ζ_{i-1}]; the decoder p(x | ζ) one such net on all latents, its output bias
  starting at the logit of the training pixel mean (Vahdat et al.'s reference nets).
- ``posterior`` (conf/posterior/): Gaussian (the ``vae_mlp`` baseline), or factorial Bernoulli with a
  relaxation (vae_lab/posteriors/smoothing.py): spike-and-exponential (DVAE), overlapping exponential /
  power (DVAE++), overlapping Gaussian, exponential, uniform+exponential, power or the Gaussian-integral
  mixture (DVAE#); the encoders give its ``num_params`` outputs per latent.
- ``prior`` (conf/prior/): built with the number of latents: the RBM (vae_lab/priors/rbm_prior.py)
  split in halves (units 1..n/2 | n/2+1..n), or a continuous prior (N(0, I), a mixture, the aggregate
  posterior) for the Gaussian posterior.
- the regulariser: chosen by the (posterior, prior) pair and ``objective.bound`` in the one table of
  vae_lab/regularisers.py (DVAE++'s analytic KL, DVAE's, the DVAE# relaxed priors, the Gaussian KL).
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
from vae_lab.regularisers import Encoding


class ImageVAE(LatentVariableModel):
    """Hierarchical-posterior VAE of binary images (see the module docstring for the parts)."""

    reads = "images"
    offers = frozenset({"encode_inputs", "input_shape"})

    def __init__(self, num_pixels: int, image_shape: tuple[int, int], pixel_mean: Tensor,
                 prior: Callable[..., nn.Module], posterior: Callable[..., nn.Module], struct: dict,
                 bound: str = "elbo", weight_decay: float = 1e-4, name: str = ""):
        super().__init__()
        self.name, self.weight_decay = name, weight_decay
        self.image_shape = tuple(image_shape)
        self.num_groups, self.group_size = int(struct["num_groups"]), int(struct["group_size"])
        self.num_latents = self.num_groups * self.group_size
        self.num_pixels = num_pixels
        self._build_posterior(posterior, self.num_latents)
        params_per_unit = self.posterior.num_params
        hidden = dict(hidden_units=int(struct["hidden_units"]), hidden_layers=int(struct["hidden_layers"]))
        self.encoders = nn.ModuleList(
            FeedForward(num_pixels + i * self.group_size, out_features=params_per_unit * self.group_size, **hidden)
            for i in range(self.num_groups))
        self.decoder = FeedForward(self.num_latents, out_features=num_pixels, **hidden)
        mean = pixel_mean.float().clamp(1e-3, 1 - 1e-3)
        self.register_buffer("pixel_mean", pixel_mean.float().clone())
        self.register_buffer("output_bias", torch.log(mean) - torch.log1p(-mean))  # logit of the pixel mean
        self._build_prior(prior, self.num_latents, bound)
        self._register_load_state_dict_pre_hook(_moved_keys)

    # ------------------------------------------------------------------ parts of one pass
    def _encode_groups(self, pixels: Tensor, relaxed: bool, repeats: int = 1) -> tuple[list, list[Tensor]]:
        """Per group: the posterior's parameters ``[k n, group]`` and the draw ``[k n, group]`` (relaxed ζ in
        training, binary z in evaluation; Gaussian z for the baseline), for k = ``repeats`` draws per
        image (k-major). The first group depends on x alone, so its net runs once per image (batch
        norm sees the same statistics as on the k-fold repeated batch)."""
        inputs = pixels - self.pixel_mean
        first = self.encoders[0](inputs).view(pixels.shape[0], -1, self.group_size).repeat(repeats, 1, 1)
        inputs = inputs.repeat(repeats, 1)
        params = [self.posterior.params(first)]
        draws = [self.posterior.draw(params[0], 1, relaxed)[0]]
        for i, encoder in enumerate(self.encoders[1:], start=1):
            out = encoder(torch.cat([inputs, *draws], dim=-1)).view(inputs.shape[0], -1, self.group_size)
            params.append(self.posterior.params(out))
            draws.append(self.posterior.draw(params[-1], 1, relaxed, offset=i * self.group_size)[0])
        return params, draws

    def input_shape(self) -> tuple[int, ...]:
        """One input's shape, for a prior that encodes inputs of its own (a one-group posterior only)."""
        self._one_group()
        return (self.num_pixels,)

    def _one_group(self) -> None:
        if self.num_groups != 1:
            raise ConfigError(f"model.struct.num_groups={self.num_groups}: a prior that encodes inputs of its own "
                              "needs a one-group posterior; use struct=1-layer-lin or struct=1-layer-nonlin")

    def encode_inputs(self, inputs: Tensor):
        """The posterior's parameters ``[n, units]`` at inputs ``[n, pixels]`` of a prior's own (the VampPrior's
        pseudo-inputs), differentiable: one group only (a hierarchical posterior's density at a point needs
        every group's draws), its batch norms (the encoder's, a BN-VAE posterior's on the means) on their
        running statistics (the data's batch statistics stay the data's)."""
        self._one_group()
        parts = (self.encoders[0], self.posterior)
        training = [part.training for part in parts]
        for part in parts:
            part.eval()
        try:
            outputs = self.encoders[0](inputs - self.pixel_mean)
            return self.posterior.params(outputs.view(inputs.shape[0], -1, self.group_size))
        finally:
            for part, mode in zip(parts, training):
                part.train(mode)

    def decoder_logits(self, latents: Tensor) -> Tensor:
        """Pixel logits ``[n, pixels]`` of p(x|ζ)."""
        return self.decoder(latents) + self.output_bias

    # ------------------------------------------------------------------ the family interface
    def log_weights(self, batch: dict, num_samples: int = 1, encoded=None) -> LogWeights:
        """log p(x|ζ) + log p(ζ) - log q(ζ|x) ``[k, batch]`` for k draws per image, the regulariser the
        (posterior, prior) pair gets (vae_lab/regularisers.py). Training: relaxed ζ; evaluation: binary
        z, the discrete RBM with its AIS log Z. ``encoded`` is unused: each group's posterior depends
        on the draws of the groups before it, so every draw goes through the encoder."""
        pixels = batch["pixels"]
        size = pixels.shape[0]
        repeated = pixels.repeat(num_samples, 1)  # [k batch, pixels], k-major
        params, draws = self._encode_groups(pixels, relaxed=self.training, repeats=num_samples)
        latents = torch.cat(draws, dim=-1)  # [k batch, units]
        log_likelihood = -F.binary_cross_entropy_with_logits(self.decoder_logits(latents), repeated,
                                                            reduction="none").sum(-1)
        encoding = Encoding(self.posterior, params, draws, self.training, num_samples, size, latents=latents)
        return self.pack_log_weights(log_likelihood, encoding)

    def decoder_modules(self) -> list[nn.Module]:
        return [self.decoder]

    def regularizer(self) -> Tensor:
        """Weight decay · ½‖·‖² on the nets' kernels and batch-norm scales (and the RBM's W)."""
        kernels = [w for net in [*self.encoders, self.decoder] for w in net.kernels()]
        return self.weight_decay * 0.5 * sum(w.pow(2).sum() for w in kernels) + self.prior.regularizer()

    @torch.no_grad()
    def encode(self, batch: dict):
        """The posteriors' parameters ``[batch, units]``: Bernoulli logits of each group given the binary
        draws before it (Gaussian means and log-variances for the baseline, given Gaussian draws)."""
        params, _ = self._encode_groups(batch["pixels"], relaxed=False)
        return type(params[0]).cat(params)

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


def _moved_keys(state_dict: dict, prefix: str, *args) -> None:
    """A checkpoint from before the posterior was a part kept the Gaussian integral's scales at
    ``sigma_raw``; they are ``posterior.sigma_raw`` now."""
    if prefix + "sigma_raw" in state_dict:
        state_dict[prefix + "posterior.sigma_raw"] = state_dict.pop(prefix + "sigma_raw")

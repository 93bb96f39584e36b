"""The one interface every model family implements; shared code (module.py, callbacks.py, modes.py)
speaks only to it, never probing a family with ``hasattr`` / ``isinstance``.

A family is an ``nn.Module`` built from parts: nets, a posterior from ``conf/posterior/`` and a prior
from ``conf/prior/`` (both built here with its latent count, ``_build_posterior`` / ``_build_prior``), the
pair's regulariser from vae_lab/regularisers.py, and the extra loss terms of ``conf/penalty/``
(``set_penalties``). It declares the batch kind it reads (``reads``: what a datamodule's ``batch_kind``
must be) and gives its named log weights, packed by ``pack_log_weights``; every other hook has a default,
so a family overrides only what it offers:

| hook | default | used for |
|---|---|---|
| ``reads`` (class attribute) | required | the batches it takes: ``sentences``, ``verb_forms``, ``images`` (vae_lab/data/loaders.py) |
| ``log_weights(batch, k, encoded=None) -> LogWeights`` | required | training objective, ELBO parts, IW-NLL (``encoded``: the ``LogWeights.encoded`` of an earlier call on the batch, so evaluation encodes it once) |
| ``encode(batch) -> posterior parameters \\| None`` | None | active units, mutual information, ``training_posteriors`` |
| ``encode_inputs(inputs) -> posterior parameters`` | error | a prior that encodes inputs of its own (the VampPrior's pseudo-inputs; ``Prior.requires``) |
| ``input_shape() -> tuple`` | error | the shape of one input, for such a prior |
| ``offers`` (class attribute) | none | which of those two the family gives (checked against the prior's ``requires``) |
| ``set_step(step) -> dict`` | ``{}`` | schedules of the family (teacher forcing); values logged under ``train/`` |
| ``regularizer() -> Tensor`` | 0 | a penalty added to the training loss (weight decay of the DVAE nets) |
| ``text_pairs(batch) -> (hyps, refs) \\| None`` | None | greedy decodings gathered over an epoch |
| ``text_metrics(hyps, refs) -> dict`` | ``{}`` | BLEU, exact match |
| ``epoch_metrics(datamodule, stage) -> dict`` | the prior's | whole-split metrics (Gaussian score, log Z) |
| ``prepare_evaluation(datamodule)`` | the prior's | before each val/test epoch (aggregate prior fit, AIS log Z) |
| ``training_posteriors(datamodule, count, generator)`` | ``encode`` of ``datamodule.training_batch`` | posteriors of training items, for ``prior=aggregate`` |
| ``sample_outputs(n, generator) -> TextOutput \\| ImageOutput \\| None`` | None | ``samples.txt`` / ``samples.png``, ``mode=sample`` |
| ``reconstruction_outputs(batch) -> … \\| None`` | None | ``reconstructions.png`` for image families |
| ``decoder_modules() -> list[nn.Module]`` | ``[]`` | ``objective.autoencoder_steps``: what ``reset_decoder`` starts afresh |
| ``modes`` (class attribute) and ``run_mode(mode, cfg, datamodule, folder)`` | none | extra modes: ``interpolate``, ``convert`` |

``modes`` maps each extra mode to the config keys it reads (declared, null by default, in
conf/train.yaml); ``train``, ``test`` and ``sample`` belong to every family.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch
from torch import Tensor, nn

from vae_lab.errors import ConfigError
from vae_lab.objectives import LogWeights
from vae_lab.penalties import DecoderTargets
from vae_lab.priors.base import Prior, training_subset
from vae_lab.regularisers import Encoding, regulariser_of


class LatentVariableModel(nn.Module):
    """Base class: a latent-variable model that yields named log weights, with no-op optional hooks."""

    reads: ClassVar[str] = ""
    offers: ClassVar[frozenset[str]] = frozenset()  # the optional hooks a prior may require that it gives
    modes: ClassVar[dict[str, tuple[str, ...]]] = {}
    prior: Prior
    _penalties: dict[str, Callable] = {}  # replaced, never mutated, by set_penalties

    # ------------------------------------------------------------------ the parts
    def _build_posterior(self, posterior: Callable[..., nn.Module], latent_dim: int,
                         in_features: int | None = None) -> nn.Module:
        """q(z|x) from its factory (``conf/posterior/``), with the head from ``in_features`` features when
        the family gives them (the text families), else the family's nets give its parameters."""
        kwargs = {} if in_features is None else {"in_features": in_features}
        self.posterior = posterior(latent_dim=latent_dim, **kwargs)
        return self.posterior

    def _build_prior(self, prior: Callable[..., Prior], latent_dim: int, bound: str) -> Prior:
        """p(z) from its factory (``conf/prior/``), bound to this model (``Prior.attach``: a prior that encodes
        inputs of its own reaches the encoder so), and the (posterior, prior) pair's regulariser under ``bound``."""
        self.prior = prior(latent_dim=latent_dim)
        self.prior.attach(self)
        self.regulariser = regulariser_of(self.posterior, self.prior, bound)
        return self.prior

    def set_penalties(self, penalties: dict[str, Callable]) -> None:
        """Extra loss terms on the latents (``conf/penalty/``: an MMD between the aggregate posterior and the
        prior), each a callable ``(Encoding, prior) -> [batch]`` named as its ``objective.weights`` key."""
        self._penalties = dict(penalties)

    def pack_log_weights(self, log_likelihood: Tensor, encoding: Encoding, *, num_units: Tensor | None = None,
                         encoded: Any = None, terms: dict[str, Tensor] | None = None,
                         metrics: dict[str, Tensor] | None = None,
                         decoder_targets: Callable[[], DecoderTargets] | None = None) -> LogWeights:
        """The family's log p(x|z) ``[k, batch]`` with the regulariser's parts of its posterior draws
        (``encoding``), the penalties' terms, and the family's own terms and metrics (``[batch]`` each).
        ``decoder_targets``: makes the batch's targets and the decoder's NLL of them, for a penalty that decodes
        latents of its own (``uses_decoder``: ``penalty=prior_decoding``), called only when one is configured; a
        family that gives none refuses such a penalty."""
        parts = self.regulariser(encoding, self.prior)
        view = (encoding.num_samples, encoding.batch_size)
        extra, targets = {}, None
        for name, penalty in self._penalties.items():
            if not getattr(penalty, "uses_decoder", False):
                extra[name] = penalty(encoding, self.prior)
                continue
            if decoder_targets is None:
                raise ConfigError(f"penalty={name}: model {type(self).__name__} gives its decoder's targets to no "
                                  "penalty; use another penalty (or none)")
            if targets is None:
                targets = decoder_targets()
            term = penalty(encoding, self.prior, targets)
            if term is not None:
                extra[name] = term
        return LogWeights(log_likelihood=log_likelihood.view(view), prior=parts.prior.reshape(view),
                          posterior=parts.posterior.reshape(view), kl_per_dim=parts.kl_per_dim,
                          analytic_kl=parts.analytic_kl, num_units=num_units, encoded=encoded,
                          terms={**parts.terms, **(terms or {}), **extra}, metrics={**parts.metrics, **(metrics or {})})

    def log_weights(self, batch: Any, num_samples: int = 1, encoded: Any = None) -> LogWeights:  # pragma: no cover
        raise NotImplementedError

    def device_of_parameters(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ optional hooks
    def set_step(self, step: int) -> dict[str, float]:
        return {}

    def regularizer(self) -> Tensor | float:
        return 0.0

    def encode(self, batch: Any):
        return None

    def encode_inputs(self, inputs: Tensor):
        raise ConfigError(f"prior={type(self.prior).__name__}: model {type(self).__name__} cannot encode inputs "
                          "of the prior's own; use another prior")

    def input_shape(self) -> tuple[int, ...]:
        raise ConfigError(f"prior={type(self.prior).__name__}: model {type(self).__name__} does not say the "
                          "shape of its inputs; use another prior")

    def text_pairs(self, batch: Any) -> tuple[list[str], list[str]] | None:
        return None

    def text_metrics(self, hypotheses: list[str], references: list[str]) -> dict[str, float]:
        return {}

    def epoch_metrics(self, datamodule, stage: str) -> dict[str, float]:
        return self.prior.evaluation_metrics()

    @torch.no_grad()
    def prepare_evaluation(self, datamodule) -> None:
        self.prior.prepare_evaluation(self, datamodule)

    @torch.no_grad()
    def training_posteriors(self, datamodule, count: int, generator: torch.Generator, chunk_size: int = 1024):
        """The posterior parameters ``[count, dim]`` of ``count`` training items (a random subset; with
        replacement when there are fewer), encoded in evaluation mode (no dropout, batch norm's running
        statistics) from ``datamodule.training_batch``: for ``prior=aggregate``."""
        training, device = self.training, self.device_of_parameters()
        self.eval()
        index = training_subset(datamodule.num_training_items(), count, generator)
        chunks = []
        for rows in index.split(chunk_size):
            batch = datamodule.training_batch(rows.tolist())
            params = self.encode({**{key: value.to(device) for key, value in batch.items()},
                                  **({"lengths_cpu": batch["lengths"]} if "lengths" in batch else {})})
            if params is None:
                raise ConfigError(f"prior={type(self.prior).__name__}: model {type(self).__name__} gives no "
                                  "posterior parameters; use another prior")
            chunks.append(params)
        self.train(training)
        return chunks[0].unpack(torch.cat([params.pack() for params in chunks]))

    def sample_outputs(self, num_samples: int, generator: torch.Generator | None = None):
        return None

    def reconstruction_outputs(self, batch: Any):
        return None

    def decoder_modules(self) -> list[nn.Module]:
        """The modules of p(x|z), for a fresh start of the decoder after autoencoder pretraining."""
        return []

    @torch.no_grad()
    def reset_decoder(self) -> list[nn.Parameter]:
        """Re-initialise every layer of ``decoder_modules()`` (each layer's own ``reset_parameters``);
        returns their parameters (whose optimizer state the caller drops)."""
        modules = self.decoder_modules()
        if not modules:
            raise ConfigError(f"objective.autoencoder_steps: model {type(self).__name__} names no decoder to "
                              "reset; set objective.autoencoder_steps=0")
        for layer in dict.fromkeys(layer for module in modules for layer in module.modules()):  # in order, once
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()
        return [p for module in modules for p in module.parameters()]

    def run_mode(self, mode: str, cfg, datamodule, output_dir) -> None:  # pragma: no cover
        raise ConfigError(f"mode={mode}: {type(self).__name__} offers no such mode")

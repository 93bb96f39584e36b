"""The one interface every model family implements; shared code (module.py, callbacks.py, train.py)
speaks only to it, never probing a family with ``hasattr`` / ``isinstance``.

A family is an ``nn.Module`` built from parts (nets, a posterior from ``conf/posterior/``, a prior from
``conf/prior/``, both built with its latent count; their regulariser from vae_lab/regularisers.py). It must
give its named log weights; every other hook has a default that does nothing, so a family overrides
only what it offers:

| hook | default | used for |
|---|---|---|
| ``log_weights(batch, k, encoded=None) -> LogWeights`` | required | training objective, ELBO parts, IW-NLL (``encoded``: the ``LogWeights.encoded`` of an earlier call on the batch, so evaluation encodes it once) |
| ``set_step(step) -> dict`` | ``{}`` | schedules of the family (teacher forcing); values logged under ``train/`` |
| ``regularizer() -> Tensor`` | 0 | a penalty added to the training loss (weight decay of the DVAE nets) |
| ``encode(batch) -> GaussianParams \\| BernoulliParams \\| None`` | None | active units, mutual information |
| ``text_pairs(batch) -> (hyps, refs) \\| None`` | None | greedy decodings gathered over an epoch |
| ``text_metrics(hyps, refs) -> dict`` | ``{}`` | BLEU, exact match |
| ``epoch_metrics(datamodule, stage) -> dict`` | the prior's | whole-split metrics (Gaussian score, log Z) |
| ``prepare_evaluation(datamodule)`` | the prior's | before each val/test epoch (aggregate prior fit, AIS log Z) |
| ``training_posteriors(datamodule, count, generator)`` | error | posteriors of training items, for ``prior=aggregate`` |
| ``sample_outputs(n, generator) -> TextOutput \\| ImageOutput \\| None`` | None | ``samples.txt`` / ``samples.png``, ``mode=sample`` |
| ``reconstruction_outputs(batch) -> … \\| None`` | None | ``reconstructions.png`` for image families |
| ``modes`` (class attribute) and ``run_mode(mode, cfg, datamodule, folder)`` | none | extra modes: ``interpolate``, ``convert`` |

``modes`` maps each extra mode to the config keys it reads (declared, null by default, in
conf/train.yaml); ``train``, ``test`` and ``sample`` belong to every family.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from vae_lab.errors import ConfigError
from vae_lab.objectives import LogWeights


class LatentVariableModel(nn.Module):
    """Base class: a latent-variable model that yields named log weights, with no-op optional hooks."""

    modes: ClassVar[dict[str, tuple[str, ...]]] = {}
    prior: nn.Module

    def log_weights(self, batch: Any, num_samples: int = 1, encoded: Any = None) -> LogWeights:  # pragma: no cover
        raise NotImplementedError

    def set_step(self, step: int) -> dict[str, float]:
        return {}

    def regularizer(self) -> Tensor | float:
        return 0.0

    def encode(self, batch: Any):
        return None

    def text_pairs(self, batch: Any) -> tuple[list[str], list[str]] | None:
        return None

    def text_metrics(self, hypotheses: list[str], references: list[str]) -> dict[str, float]:
        return {}

    def epoch_metrics(self, datamodule, stage: str) -> dict[str, float]:
        return self.prior.evaluation_metrics()

    @torch.no_grad()
    def prepare_evaluation(self, datamodule) -> None:
        self.prior.prepare_evaluation(self, datamodule)

    def training_posteriors(self, datamodule, count: int, generator: torch.Generator):
        raise ConfigError(f"prior={type(self.prior).__name__}: model {type(self).__name__} cannot encode "
                          "training items for it; use another prior")

    def sample_outputs(self, num_samples: int, generator: torch.Generator | None = None):
        return None

    def reconstruction_outputs(self, batch: Any):
        return None

    def run_mode(self, mode: str, cfg, datamodule, output_dir) -> None:  # pragma: no cover
        raise ConfigError(f"mode={mode}: {type(self).__name__} offers no such mode")

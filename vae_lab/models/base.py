"""The interface every model family implements; the LightningModule only speaks to this.

A family is an ``nn.Module`` built from parts (encoder/decoder nets, a posterior, a prior). The
shared ``LatentVariableModule`` (vae_lab/module.py) trains and evaluates any of them through:

- ``log_weights(batch, num_samples) -> LogWeights`` (required): the named parts ``[k, batch]``.
- ``encode(batch) -> (mean, log_var)`` (optional, Gaussian families): the parameters of q(z|x),
  each ``[batch, dim]``; used for active units and mutual information.
- ``set_step(step) -> dict[str, float]`` (optional): told the global step before each training
  step (e.g. to anneal a teacher-forcing ratio); returns values to log under ``train/``.
- ``text_pairs(batch) -> (hypotheses, references)`` (optional): greedy decodings (reconstructions or
  conversions) and their references, as strings, gathered over an epoch for BLEU.
- ``text_metrics(hypotheses, references) -> dict[str, float]`` (optional): the family's text
  metrics on the gathered pairs, e.g. ``{"bleu": …}``.
- ``epoch_metrics(datamodule, stage) -> dict[str, float]`` (optional): metrics that need the whole
  dataset or prior samples, e.g. the CVAE Gaussian score.
- ``prepare_evaluation(datamodule)`` (optional): called before each validation and test epoch, in
  eval mode, e.g. to set a prior fitted to the training data (the CVAE's aggregate-posterior prior).
- ``sample_prior(num_samples, generator) -> list[str]`` (optional): decodings of prior samples, for
  ``mode=sample`` and ``samples.txt``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vae_lab.objectives import LogWeights


class LatentVariableModel(nn.Module):
    """Base class: a latent-variable model that yields named log weights."""

    def log_weights(self, batch: Any, num_samples: int = 1) -> LogWeights:  # pragma: no cover
        raise NotImplementedError

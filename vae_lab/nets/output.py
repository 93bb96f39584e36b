"""The output softmax over a large vocabulary, evaluated only at the target tokens.

``target_log_prob(hidden, layer, targets)`` is ``log_softmax(layer(hidden))[targets]`` per row:

- with gradients (training), the layer and ``F.cross_entropy``: autograd's own kernels, which measured
  as fast as a fused autograd function in float32 and faster under bf16 autocast
  (``experiments/profile_text_step.py``);
- without gradients (evaluation), rows go through in chunks of at most ``max_logits`` logits and only
  the log-normaliser and the target's logit of each row are kept, so memory stays bounded whatever the
  number of importance samples and sentences (the full ``[tokens, vocab]`` log-probabilities never exist).

Under autocast (``trainer.precision=bf16-mixed``) the layer's GEMMs run in bfloat16 and the
log-normaliser is taken in float32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_LOGITS = 2**22  # logits alive at once in evaluation: 16 MiB in float32


def _target_minus_log_norm(logits: Tensor, targets: Tensor) -> Tensor:
    """log p at the targets, float32 ``[rows]``."""
    return logits.gather(1, targets.unsqueeze(1)).squeeze(1).float() - torch.logsumexp(logits.float(), dim=1)


def target_log_prob(hidden: Tensor, layer: nn.Linear, targets: Tensor, max_logits: int = MAX_LOGITS) -> Tensor:
    """``log_softmax(layer(hidden), -1)`` at ``targets``: hidden ``[rows, in]``, targets ``[rows]`` ->
    float32 ``[rows]``."""
    if torch.is_grad_enabled() and (hidden.requires_grad or layer.weight.requires_grad):
        return -F.cross_entropy(layer(hidden), targets, reduction="none").float()
    rows = max(1, max_logits // layer.out_features)
    parts = [_target_minus_log_norm(layer(h), t) for h, t in zip(hidden.split(rows), targets.split(rows))]
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)

"""The output softmax over a large vocabulary, evaluated only at the target tokens.

``target_log_prob(hidden, layer, targets)`` is ``log_softmax(layer(hidden))[targets]`` per row, without
the full log-probabilities ever existing:

- with gradients, one autograd function keeps the logits and their log-normaliser, and its backward
  turns the logits into ``softmax - onehot`` in place before the two GEMMs: about half the memory
  passes of ``F.cross_entropy(layer(hidden))`` over the ``[tokens, vocab]`` logits, and one such
  array alive instead of three;
- without gradients (evaluation), rows go through in chunks of at most ``max_logits`` logits, so
  memory stays bounded whatever the number of importance samples and sentences.

Under autocast (``trainer.precision=bf16-mixed``) the GEMMs run in the autocast dtype, as
``nn.Linear`` would, and the log-normaliser is taken in float32.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

MAX_LOGITS = 2**22  # logits alive at once in evaluation: 16 MiB in float32


def _compute_dtype(tensor: Tensor) -> torch.dtype:
    """The dtype a linear layer runs in here: autocast's when it is on for this device, else the input's."""
    device = tensor.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return tensor.dtype


def _logits(hidden: Tensor, weight: Tensor, bias: Tensor | None, dtype: torch.dtype) -> Tensor:
    with torch.autocast(hidden.device.type, enabled=False):
        h, w = hidden.to(dtype), weight.to(dtype)
        if bias is None:
            return h @ w.t()
        return torch.addmm(bias.to(dtype), h, w.t())


def _gathered_minus_lse(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """(log p at the targets, log-normaliser), both float32 ``[rows]``."""
    log_norm = torch.logsumexp(logits.float(), dim=1)
    return logits.gather(1, targets.unsqueeze(1)).squeeze(1).float() - log_norm, log_norm


class _TargetLogProb(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor,
                dtype: torch.dtype) -> Tensor:
        logits = _logits(hidden, weight, bias, dtype)  # [rows, vocab]
        log_prob, log_norm = _gathered_minus_lse(logits, targets)
        ctx.save_for_backward(hidden, weight, targets, logits, log_norm)
        ctx.has_bias, ctx.dtype = bias is not None, dtype
        return log_prob

    @staticmethod
    def backward(ctx, grad: Tensor):
        if getattr(ctx, "consumed", False):
            raise RuntimeError("target_log_prob: backward ran twice over the same graph (retain_graph); "
                               "its logits were overwritten by the first backward")
        ctx.consumed = True
        hidden, weight, targets, logits, log_norm = ctx.saved_tensors
        # d log p_t / d logits = onehot(t) - softmax, times the incoming gradient; float32 logits become
        # the softmax in place (a bf16 copy is widened first)
        grad = grad.float().unsqueeze(1)  # [rows, 1]
        grad_logits = logits.float().sub_(log_norm.unsqueeze(1)).exp_().mul_(-grad)
        grad_logits.scatter_add_(1, targets.unsqueeze(1), grad)  # [rows, vocab]
        g, w = grad_logits.to(ctx.dtype), weight.to(ctx.dtype)
        grad_hidden = (g @ w).to(hidden.dtype) if ctx.needs_input_grad[0] else None
        grad_weight = (g.t() @ hidden.to(ctx.dtype)).to(weight.dtype) if ctx.needs_input_grad[1] else None
        grad_bias = grad_logits.sum(0).to(weight.dtype) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_hidden, grad_weight, grad_bias, None, None


def target_log_prob(hidden: Tensor, layer: nn.Linear, targets: Tensor, max_logits: int = MAX_LOGITS) -> Tensor:
    """``log_softmax(layer(hidden), -1)`` at ``targets``: hidden ``[rows, in]``, targets ``[rows]`` ->
    float32 ``[rows]``."""
    dtype = _compute_dtype(hidden)
    if torch.is_grad_enabled() and (hidden.requires_grad or layer.weight.requires_grad):
        return _TargetLogProb.apply(hidden, layer.weight, layer.bias, targets, dtype)
    rows = max(1, max_logits // layer.out_features)
    parts = [_gathered_minus_lse(_logits(h, layer.weight, layer.bias, dtype), t)[0]
             for h, t in zip(hidden.split(rows), targets.split(rows))]
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)

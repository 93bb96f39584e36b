"""Recurrent encoders and decoders for sequences of token ids."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from vae_lab.errors import ConfigError


class LSTM(nn.LSTM):
    """``nn.LSTM`` that runs in float32 under CPU autocast: torch's oneDNN LSTM has no bfloat16
    kernel on CPU ("could not create a primitive descriptor"), so ``trainer.precision=bf16-mixed``
    keeps the LSTM in float32 there and uses bfloat16 for the rest (the output GEMMs)."""

    def forward(self, input, hx=None):
        if not (torch.is_autocast_enabled("cpu") and self.weight_ih_l0.device.type == "cpu"):
            return super().forward(input, hx)
        if hx is not None:
            hx = tuple(state.float() for state in hx)
        with torch.autocast("cpu", enabled=False):
            return super().forward(input.float(), hx)


RNN_TYPES = {"gru": nn.GRU, "lstm": LSTM}


def host_lengths(batch: dict) -> Tensor:
    """Sequence lengths for packing, on the CPU: the module's host copy (``lengths_cpu``, kept when
    the batch moves to a device, so packing needs no device sync) or ``lengths`` itself."""
    return batch.get("lengths_cpu", batch["lengths"])


def make_rnn(rnn_type: str, input_size: int, hidden_size: int, num_layers: int = 1,
             bidirectional: bool = False, dropout: float = 0.0) -> nn.RNNBase:
    if rnn_type not in RNN_TYPES:
        raise ConfigError(f"model.rnn_type={rnn_type!r}: allowed values are {sorted(RNN_TYPES)}")
    return RNN_TYPES[rnn_type](input_size, hidden_size, num_layers=num_layers, batch_first=True,
                               bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)


def initial_state(features: Tensor, rnn_type: str, slots: int, hidden_size: int, tanh_hidden: bool = False):
    """An RNN's initial state from features ``[n, states · slots · hidden]`` (``slots``: layers × directions;
    states: (h, c) for an LSTM, h for a GRU), each ``[slots, n, hidden]``; ``tanh_hidden`` squashes h."""
    num_states = 2 if rnn_type == "lstm" else 1
    states = features.view(features.shape[0], num_states, slots, hidden_size).permute(1, 2, 0, 3)
    hidden = torch.tanh(states[0]) if tanh_hidden else states[0]
    if rnn_type == "lstm":
        return hidden.contiguous(), states[1].contiguous()
    return hidden.contiguous()


class RNNEncoder(nn.Module):
    """Reads embedded sequences; returns the last layer's final hidden state(s) ``[batch, out]``.

    Padded positions are skipped with a packed sequence, so the state is that at each sequence's
    true end (both directions concatenated when bidirectional). ``initial_state``: the RNN's starting
    state (the CVAE's, from the tense); ``with_cell``: an LSTM's final cell states follow the hidden
    ones (``output_size`` doubles).
    """

    def __init__(self, rnn_type: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0, with_cell: bool = False):
        super().__init__()
        if with_cell and rnn_type != "lstm":
            raise ConfigError(f"model.rnn_type={rnn_type}: only an LSTM has cell states to read")
        self.rnn = make_rnn(rnn_type, input_size, hidden_size, num_layers, bidirectional, dropout)
        self.num_directions = 2 if bidirectional else 1
        self.with_cell = with_cell
        self.output_size = hidden_size * self.num_directions * (2 if with_cell else 1)

    def forward(self, embedded: Tensor, lengths: Tensor, initial_state=None) -> Tensor:
        packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, state = self.rnn(packed, initial_state)
        states = state if isinstance(state, tuple) else (state,)  # each [layers * dirs, batch, hidden]
        parts = [s[-self.num_directions:] for s in (states if self.with_cell else states[:1])]  # the last layer's
        return torch.cat([*(p for part in parts for p in part)], dim=-1).reshape(embedded.shape[0], self.output_size)


class LatentInitialisedDecoder(nn.Module):
    """An RNN whose initial state is a function of a conditioning vector (z, or z with a label).

    ``state_from(condition)`` maps ``[n, cond]`` to the RNN's initial state (h0, and c0 for LSTM; h0
    through tanh with ``tanh_hidden``); ``forward`` runs teacher-forced over whole sequences in one fused
    call and returns the hidden outputs ``[n, time, hidden]``; ``step`` advances one token for greedy or
    sampled decoding. With ``feed_condition`` the condition is also concatenated to every input step.
    """

    def __init__(self, rnn_type: str, input_size: int, hidden_size: int, condition_size: int,
                 num_layers: int = 1, dropout: float = 0.0, feed_condition: bool = False,
                 tanh_hidden: bool = False):
        super().__init__()
        self.rnn_type, self.num_layers, self.hidden_size = rnn_type, num_layers, hidden_size
        self.feed_condition, self.tanh_hidden = feed_condition, tanh_hidden
        rnn_input = input_size + (condition_size if feed_condition else 0)
        self.rnn = make_rnn(rnn_type, rnn_input, hidden_size, num_layers, False, dropout)
        num_states = 2 if rnn_type == "lstm" else 1
        self.to_state = nn.Linear(condition_size, num_states * num_layers * hidden_size)

    def state_from(self, condition: Tensor):
        return initial_state(self.to_state(condition), self.rnn_type, self.num_layers, self.hidden_size,
                             self.tanh_hidden)

    def _inputs(self, embedded: Tensor, condition: Tensor) -> Tensor:
        if not self.feed_condition:
            return embedded
        return torch.cat([embedded, condition.unsqueeze(1).expand(-1, embedded.shape[1], -1)], dim=-1)

    def forward(self, embedded: Tensor, condition: Tensor, state=None) -> Tensor:
        """Teacher-forced outputs ``[n, time, hidden]`` for inputs ``[n, time, emb]`` (from ``state``, or
        the condition's initial state)."""
        outputs, _ = self.rnn(self._inputs(embedded, condition), self.state_from(condition) if state is None else state)
        return outputs

    def step(self, embedded: Tensor, condition: Tensor, state):
        """One step: inputs ``[n, 1, emb]`` -> outputs ``[n, hidden]``, new state."""
        outputs, state = self.rnn(self._inputs(embedded, condition), state)
        return outputs[:, -1], state


StepFunction = Callable[[Tensor, Any], tuple[Tensor, Any]]


@torch.no_grad()
def decode_tokens(step: StepFunction, state: Any, first: Tensor, eos: int, max_steps: int, greedy: bool = True,
                  generator: torch.Generator | None = None) -> list[list[int]]:
    """Token-by-token decoding, the one loop of both text families: ``step(ids [n], state) -> (logits
    [n, vocab], state)`` from ``state``, fed ``first`` ``[n]`` (<sos>), then its own choices (argmax, or a
    draw from the softmax with ``generator``), for at most ``max_steps`` steps or until every row has
    emitted ``eos``. Returns each row's ids ``[n][steps]`` (up to the common stop; cut at <eos> by the
    caller's vocabulary)."""
    token, finished, steps = first, torch.zeros_like(first, dtype=torch.bool), []
    for _ in range(max_steps):
        logits, state = step(token, state)
        if greedy:
            token = logits.argmax(-1)
        else:
            token = torch.multinomial(logits.softmax(-1).cpu(), 1, generator=generator).squeeze(1).to(first.device)
        steps.append(token)
        finished |= token.eq(eos)
        if bool(finished.all()):
            break
    return torch.stack(steps, dim=1).tolist()

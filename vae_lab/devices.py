"""Where random draws happen: the one rule for generators and the tensors they draw.

Every ``torch.Generator`` that vae_lab creates comes from :func:`generator_on`, on the device of the
model (or the tensors) it draws for, and every function that draws with a generator it was handed
checks it with :func:`checked_generator` first. A CPU generator handed to CUDA draws then stops with
one line that names the caller, instead of torch's "Expected a 'cuda' device type for generator" from
deep inside a kernel. Host-side draws (which items of a dataset, in which order) use the CPU on
purpose: they index host memory, so their generator is ``generator_on("cpu", seed)``.
"""
from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn


class DeviceMismatchError(ValueError):
    """A generator on another device than the tensors it would draw."""


def device_of(where: Tensor | nn.Module | torch.device | str | None) -> torch.device:
    """The device of a tensor, of a module's first parameter or buffer (the CPU for a module with
    neither), or a device given as such."""
    if where is None:
        return torch.device("cpu")
    if isinstance(where, Tensor):
        return where.device
    if isinstance(where, nn.Module):
        tensor = _first_tensor(where)
        return torch.device("cpu") if tensor is None else tensor.device
    return torch.device(where)


def _first_tensor(module: nn.Module) -> Tensor | None:
    """The module's first parameter, else its first buffer; None when it has neither."""
    return next(itertools.chain(module.parameters(), module.buffers()), None)


def _same(a: torch.device, b: torch.device) -> bool:
    """CUDA devices without an index mean the current one."""
    if a.type != b.type:
        return False
    if a.type != "cuda" or a.index is None or b.index is None:
        return True
    return a.index == b.index


def generator_on(where: Tensor | nn.Module | torch.device | str | None, seed: int | None) -> torch.Generator:
    """A generator on ``where``'s device, seeded with ``seed`` (``None``: a non-deterministic seed).
    The same seed gives the same draws on one device; CPU and CUDA streams differ."""
    generator = torch.Generator(device=device_of(where))
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed))
    return generator


def checked_generator(generator: torch.Generator | None, where, caller: str = "a draw") -> torch.Generator | None:
    """``generator`` unchanged when it is ``None`` or on ``where``'s device; otherwise one clear error."""
    if generator is None:
        return None
    device = device_of(where)
    if not _same(generator.device, device):
        raise DeviceMismatchError(f"{caller}: the generator is on {generator.device} but the draws are on {device}; "
                                  f"make it with vae_lab.devices.generator_on(<model or tensor>, seed)")
    return generator


def draw_device(module: nn.Module, generator: torch.Generator | None, caller: str) -> torch.device:
    """Where a module's draws go: its own device (checked against the generator), or, for a module
    without parameters or buffers (N(0, I)), the generator's device."""
    tensor = _first_tensor(module)
    if tensor is None:
        return generator.device if generator is not None else torch.device("cpu")
    device = tensor.device
    checked_generator(generator, device, caller)
    return device

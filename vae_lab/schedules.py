"""Schedules: training step -> value. Used for the KL weight (kl_weight) and for other annealed ratios
(e.g. the CVAE's teacher-forcing ratio, linear from 1 to 0).

Every schedule goes from ``start`` to ``end`` (the KL weight: 0 -> ``max_value``); they are
plain callables with no state, so a restored run resumes on the same curve.
"""
from __future__ import annotations

import math


class Schedule:
    """Base: ``schedule(step) -> float``."""

    def __call__(self, step: int) -> float:  # pragma: no cover
        raise NotImplementedError


class Constant(Schedule):
    """w(t) = value."""

    def __init__(self, value: float = 1.0):
        self.value = float(value)

    def __call__(self, step: int) -> float:
        return self.value


class Linear(Schedule):
    """Monotonic: start -> end linearly over ``steps`` steps, then end (Bowman et al. 2016)."""

    def __init__(self, steps: int, start: float = 0.0, end: float = 1.0, delay: int = 0):
        if steps <= 0:
            raise ValueError(f"annealing.steps must be > 0, got {steps}")
        self.steps, self.start, self.end, self.delay = int(steps), float(start), float(end), int(delay)

    def __call__(self, step: int) -> float:
        progress = min(max(step - self.delay, 0) / self.steps, 1.0)
        return self.start + (self.end - self.start) * progress


class Sigmoid(Schedule):
    """Logistic: w(t) = start + (end - start) / (1 + exp(-slope (t - midpoint))).

    Bowman et al.'s vaelm code: midpoint 60,000 steps; slope 0.0025 ~ a 4,000-step rise.
    """

    def __init__(self, midpoint: int, slope: float, start: float = 0.0, end: float = 1.0):
        self.midpoint, self.slope, self.start, self.end = int(midpoint), float(slope), float(start), float(end)

    def __call__(self, step: int) -> float:
        x = -self.slope * (step - self.midpoint)
        logistic = 1.0 / (1.0 + math.exp(x)) if x < 700 else 0.0
        return self.start + (self.end - self.start) * logistic


class Cyclical(Schedule):
    """Cyclical annealing (Fu et al. 2019): ``cycles`` cycles over ``total_steps`` steps.

    Within each cycle of length T/M, w rises over the first fraction ``ratio`` of the cycle
    (linearly, or along a logistic curve with ``shape=sigmoid``) from ``start`` to ``end``, then
    stays at ``end`` for the rest of the cycle. After the last cycle it stays at ``end``.
    """

    def __init__(self, total_steps: int, cycles: int = 4, ratio: float = 0.5, start: float = 0.0,
                 end: float = 1.0, shape: str = "linear", steepness: float = 12.0):
        if shape not in ("linear", "sigmoid"):
            raise ValueError(f"annealing.shape must be one of [linear, sigmoid], got {shape!r}")
        if total_steps <= 0 or cycles <= 0 or not 0 < ratio <= 1:
            raise ValueError("annealing: need total_steps > 0, cycles > 0 and 0 < ratio <= 1")
        self.total_steps, self.cycles, self.ratio = int(total_steps), int(cycles), float(ratio)
        self.start, self.end, self.shape, self.steepness = float(start), float(end), shape, float(steepness)

    def __call__(self, step: int) -> float:
        if step >= self.total_steps:
            return self.end
        period = self.total_steps / self.cycles
        progress = (step % period) / (period * self.ratio)  # in [0, 1/ratio)
        if progress >= 1.0:
            return self.end
        if self.shape == "sigmoid":
            progress = 1.0 / (1.0 + math.exp(-self.steepness * (progress - 0.5)))
        return self.start + (self.end - self.start) * progress


class Piecewise(Schedule):
    """Piecewise constant: ``values[i]`` from ``boundaries[i - 1] * total_steps`` on (fractions of
    the run). DVAE#'s learning-rate factors: [1/10, 1, 1/3, 1/10, 1/33] at 2%, 60%, 75%, 95%."""

    def __init__(self, total_steps: int, boundaries: list[float], values: list[float]):
        if len(values) != len(boundaries) + 1:
            raise ValueError(f"lr_scheduler: {len(values)} values for {len(boundaries)} boundaries; "
                             "give one value more than boundaries")
        if total_steps is None or total_steps <= 0:
            raise ValueError(f"lr_scheduler.total_steps={total_steps}: set trainer.max_steps to a positive number")
        self.steps = [int(b * total_steps) for b in boundaries]
        self.values = [float(v) for v in values]

    def __call__(self, step: int) -> float:
        index = sum(step >= boundary for boundary in self.steps)
        return self.values[index]

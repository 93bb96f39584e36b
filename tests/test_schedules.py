import math

import pytest

from vae_lab.schedules import Constant, Cyclical, Linear, Sigmoid


def test_constant():
    assert Constant(0.3)(0) == Constant(0.3)(10**6) == 0.3


def test_linear_monotonic():
    schedule = Linear(steps=100, end=0.5, delay=10)
    assert [schedule(t) for t in (0, 10, 60, 110, 10**5)] == [0.0, 0.0, 0.25, 0.5, 0.5]
    assert Linear(steps=4, start=1.0, end=0.0)(1) == 0.75  # teacher forcing 1 -> 0


def test_sigmoid():
    schedule = Sigmoid(midpoint=60000, slope=0.0025)
    assert schedule(60000) == 0.5
    assert math.isclose(schedule(60000 + 400), 1 / (1 + math.exp(-1)))
    assert schedule(0) < 1e-60 and schedule(10**7) == 1.0


def test_cyclical_linear_fu_et_al():
    schedule = Cyclical(total_steps=400, cycles=4, ratio=0.5, end=1.0)  # period 100, rise 50
    assert [schedule(t) for t in (0, 25, 50, 99, 100, 125, 399, 400)] == [0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0]


def test_cyclical_sigmoid_shape_and_max():
    schedule = Cyclical(total_steps=200, cycles=2, ratio=0.5, end=0.25, shape="sigmoid")
    assert math.isclose(schedule(25), 0.125)
    assert schedule(0) < 0.01 and schedule(60) == 0.25 and schedule(100) < 0.01


def test_bad_values_name_the_key():
    with pytest.raises(ValueError, match="annealing.shape"):
        Cyclical(10, shape="cosine")
    with pytest.raises(ValueError, match="annealing.steps"):
        Linear(steps=0)

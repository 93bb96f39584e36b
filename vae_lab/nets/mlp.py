"""Feed-forward nets of the discrete VAEs (DVAE / DVAE++ / DVAE# structures)."""
from __future__ import annotations

import math

from torch import Tensor, nn


class FeedForward(nn.Module):
    """``hidden_layers`` × (dense → batch norm → tanh), then a dense output layer.

    Weights start from a variance-scaling normal (std sqrt(2 / fan_in)), biases at zero; batch norm
    keeps running statistics with momentum 0.2 and eps 1e-2 (TensorFlow's momentum 0.8), as the
    DVAE# reference nets. ``kernels()`` lists what weight decay acts on: dense weights and batch-norm
    scales, not biases.
    """

    def __init__(self, in_features: int, hidden_units: int, hidden_layers: int, out_features: int,
                 batch_norm: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(hidden_layers):
            layers += [nn.Linear(width, hidden_units)]
            if batch_norm:
                layers += [nn.BatchNorm1d(hidden_units, eps=1e-2, momentum=0.2)]
            layers += [nn.Tanh()]
            width = hidden_units
        layers += [nn.Linear(width, out_features)]
        self.layers = nn.Sequential(*layers)
        for layer in self.layers:
            if isinstance(layer, nn.Linear):  # initialising our own layers
                nn.init.normal_(layer.weight, std=math.sqrt(2.0 / layer.in_features))
                nn.init.zeros_(layer.bias)

    @property
    def output(self) -> nn.Linear:
        return self.layers[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)

    def kernels(self) -> list[Tensor]:
        return [layer.weight for layer in self.layers if isinstance(layer, (nn.Linear, nn.BatchNorm1d))]

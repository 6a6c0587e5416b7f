"""Multi-layer perceptron: the fully connected baseline every other model has to beat.

A stack of Linear (-> BatchNorm) -> activation -> Dropout layers on the flattened image, then a
linear head. With ``hidden=()`` it is multinomial logistic regression. BatchNorm is from Ioffe &
Szegedy 2015, dropout from Srivastava et al. 2014.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import nn

from neuralab.models.base import (
    ACTIVATIONS,
    ImageClassifier,
    ImageModelConfig,
    check,
    check_choice,
    register_model,
)


def hidden_layer(d_in: int, d_out: int, config: MLPConfig) -> nn.Sequential:
    """Linear -> BatchNorm (optional) -> activation -> Dropout; no bias when BN follows it."""
    return nn.Sequential(
        nn.Linear(d_in, d_out, bias=not config.batchnorm),
        nn.BatchNorm1d(d_out) if config.batchnorm else nn.Identity(),
        ACTIVATIONS[config.activation](),
        nn.Dropout(config.dropout),
    )


@dataclass(frozen=True)
class MLPConfig(ImageModelConfig):
    hidden: tuple[int, ...] = (512, 256)
    activation: str = "relu"
    batchnorm: bool = False
    dropout: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        check(all(h >= 1 for h in self.hidden), f"hidden sizes must be >= 1, got {self.hidden}")
        check_choice("activation", self.activation, ACTIVATIONS)
        check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")


@register_model("mlp")
class MLP(ImageClassifier):
    Config = MLPConfig

    def __init__(self, config: MLPConfig) -> None:
        super().__init__(config)
        sizes = (config.in_channels * config.image_size**2, *config.hidden)
        self.body = nn.Sequential(*(hidden_layer(a, b, config) for a, b in pairwise(sizes)))
        self.head = nn.Linear(sizes[-1], config.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x).flatten(1)  # (B, C*H*W)
        return self.body(x)  # (B, hidden[-1])

"""A small VGG-style convolutional network (Simonyan & Zisserman 2015), lean enough for a CPU.

Stages of conv3x3-BatchNorm-ReLU, each ending in a 2x2 max-pool that halves the image, widths
doubling from stage to stage; then global average pooling (Lin et al. 2014, "Network in
Network") or a flatten, dropout and a linear head. Pooling stops once the image is 1x1, so the
same config runs on 8x8 digits, 28x28 (Fashion-)MNIST and 32x32 CIFAR.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from neuralab.models.base import (
    ImageClassifier,
    ImageModelConfig,
    check,
    check_choice,
    register_model,
)


def stage(c_in: int, c_out: int, num_convs: int, pool: bool) -> nn.Sequential:
    """``num_convs`` x (conv3x3 -> BN -> ReLU), then a 2x2 max-pool if ``pool``."""
    layers: list[nn.Module] = []
    for i in range(num_convs):
        layers += [
            nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class CNNConfig(ImageModelConfig):
    widths: tuple[int, ...] = (32, 64, 128)
    convs_per_stage: int = 1
    pool: str = "avg"  # "avg": global average pool; "flatten": keep the spatial layout
    dropout: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            len(self.widths) >= 1 and all(w >= 1 for w in self.widths),
            f"widths must be one or more sizes >= 1, got {self.widths}",
        )
        check(
            self.convs_per_stage >= 1, f"convs_per_stage must be >= 1, got {self.convs_per_stage}"
        )
        check_choice("pool", self.pool, ("avg", "flatten"))
        check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")


@register_model("cnn")
class CNN(ImageClassifier):
    Config = CNNConfig

    def __init__(self, config: CNNConfig) -> None:
        super().__init__(config)
        stages, c_in, size = [], config.in_channels, config.image_size
        for width in config.widths:
            stages.append(stage(c_in, width, config.convs_per_stage, pool=size > 1))
            c_in, size = width, max(size // 2, 1)
        self.stages = nn.Sequential(*stages)
        if config.pool == "avg":
            self.pool, dim = nn.AdaptiveAvgPool2d(1), c_in
        else:
            self.pool, dim = nn.Identity(), c_in * size * size
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(dim, config.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.normalize(x))  # (B, widths[-1], h, w)
        x = self.pool(x).flatten(1)  # (B, D): D = widths[-1] (avg) or widths[-1]*h*w (flatten)
        return self.dropout(x)

"""Dense prediction on the registry's ResNet: the backbone of the detectors, and an FCN.

``Backbone`` is the ResNet of ``resnet.py`` made for dense prediction: a stride-2 3×3 stem,
then four stages of its basic blocks (He et al. 2016) at strides 2, 4, 8 and 16, and the
top-down path of a feature pyramid network (Lin et al. 2017, "Feature Pyramid Networks for
Object Detection"): 1×1 lateral convolutions, nearest upsampling and sums, down to one map
at stride 4 that carries the deepest stage's context at a quarter of the input's resolution.

``FCN`` is the fully convolutional segmenter of Long, Shelhamer & Darrell 2015: a classifier
of every cell of that map (a 3×3 conv-BN-ReLU, then a 1×1 convolution to the class logits),
upsampled bilinearly to the input's size; the pyramid's sums play the part of the paper's
skip connections from the finer layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from neuralab.models.base import ImageModelConfig, Normalize, check, register_model
from neuralab.models.resnet import ResNetConfig, stage

STRIDE = 4  # the output map's resolution: one cell per 4×4 input pixels
BLOCK_OPTIONS = ResNetConfig(shortcut="B")  # post-activation basic blocks, BN, projections


@dataclass(frozen=True)
class DenseConfig(ImageModelConfig):
    in_channels: int = 3
    image_size: int = 96
    widths: tuple[int, ...] = (16, 32, 64, 128)  # channels of the stages, stride 2 to 16
    blocks: int = 1  # basic blocks per stage
    neck: int = 64  # channels of the merged map (and of the heads on it)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(len(self.widths) == 4, f"widths must be 4 stage sizes, got {self.widths}")
        check(all(w >= 1 for w in self.widths), f"widths must be >= 1, got {self.widths}")
        check(self.blocks >= 1, f"blocks must be >= 1, got {self.blocks}")
        check(self.neck >= 1, f"neck must be >= 1, got {self.neck}")
        check(self.image_size >= 32, f"dense models need image_size >= 32, got {self.image_size}")


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class Backbone(nn.Module):
    """(B, C, H, W) normalised images -> (B, neck, H/4, W/4) features."""

    def __init__(self, config: DenseConfig) -> None:
        super().__init__()
        w, n = config.widths, config.blocks
        self.stem = conv_bn_relu(config.in_channels, w[0], stride=2)
        self.stages = nn.ModuleList(
            stage(c_in, c_out, n, 1 if i == 0 else 2, BLOCK_OPTIONS)
            for i, (c_in, c_out) in enumerate(zip((w[0], *w[:-1]), w, strict=True))
        )
        self.lateral = nn.ModuleList(nn.Conv2d(c, config.neck, 1) for c in w[1:])
        self.smooth = conv_bn_relu(config.neck, config.neck)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)  # (B, w0, H/2, W/2)
        features = []
        for block in self.stages:
            x = block(x)
            features.append(x)  # strides 2, 4, 8, 16
        top = self.lateral[-1](features[-1])  # (B, neck, H/16, W/16)
        for lateral, feature in zip(self.lateral[-2::-1], features[-2:0:-1], strict=True):
            top = lateral(feature) + F.interpolate(top, size=feature.shape[-2:], mode="nearest")
        return self.smooth(top)  # (B, neck, H/4, W/4)


@register_model("fcn")
class FCN(nn.Module):
    """``forward(x)``: (B, C, H, W) images in [0, 1] -> (B, num_classes, H, W) logits."""

    Config = DenseConfig
    kind: ClassVar[str] = "segment"

    def __init__(self, config: DenseConfig) -> None:
        super().__init__()
        self.config = config
        self.normalize = Normalize(config.mean, config.std)
        self.backbone = Backbone(config)
        self.head = nn.Sequential(
            conv_bn_relu(config.neck, config.neck), nn.Conv2d(config.neck, config.num_classes, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        logits = self.head(self.backbone(self.normalize(x)))  # (B, classes, H/4, W/4)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def num_params(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

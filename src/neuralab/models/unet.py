"""U-Net: a class for every pixel (semantic segmentation).

Ronneberger, Fischer & Brox 2015, "U-Net: Convolutional Networks for Biomedical Image
Segmentation": an encoder halves the resolution level by level (two 3×3 convolutions, then
2×2 max pooling), a decoder doubles it back (a 2×2 transposed convolution), and at each level
the decoder concatenates the encoder's features of the same resolution (the skip
connections that keep the edges sharp). A 1×1 convolution gives each pixel its class logits.
Unlike the paper's valid convolutions, these pad, so the output has the input's size; each
convolution is followed by BatchNorm (Ioffe & Szegedy 2015) and ReLU.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import ClassVar

import torch
from torch import nn

from neuralab.models.base import ImageModelConfig, Normalize, check, register_model


@dataclass(frozen=True)
class UNetConfig(ImageModelConfig):
    # channels at each resolution, finest first; the image side must divide by 2^(levels-1)
    widths: tuple[int, ...] = (16, 32, 64)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(len(self.widths) >= 2, f"a U-Net needs >= 2 levels, got widths={self.widths}")
        check(all(w >= 1 for w in self.widths), f"widths must be >= 1, got {self.widths}")
        scale = 2 ** (len(self.widths) - 1)
        check(
            self.image_size % scale == 0,
            f"image_size={self.image_size} must divide by {scale} for {len(self.widths)} levels",
        )


def double_conv(c_in: int, c_out: int) -> nn.Sequential:
    """(3×3 conv -> BatchNorm -> ReLU) twice; no conv bias, BatchNorm has one."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


@register_model("unet")
class UNet(nn.Module):
    """``forward(x)``: (B, C, H, W) images in [0, 1] -> (B, num_classes, H, W) logits."""

    Config = UNetConfig
    kind: ClassVar[str] = "segment"

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        self.normalize = Normalize(config.mean, config.std)
        widths = config.widths
        self.down = nn.ModuleList(
            double_conv(a, b) for a, b in pairwise((config.in_channels, *widths))
        )
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(nn.ConvTranspose2d(b, a, 2, stride=2) for a, b in pairwise(widths))
        self.merge = nn.ModuleList(double_conv(2 * a, a) for a in widths[:-1])
        self.head = nn.Conv2d(widths[0], config.num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))  # (B, widths[i], H / 2^i, W / 2^i)
            skips.append(x)
        for up, merge, skip in reversed(list(zip(self.up, self.merge, skips[:-1], strict=True))):
            x = merge(torch.cat([skip, up(x)], dim=1))  # up one level, then the skip's detail
        return self.head(x)  # (B, num_classes, H, W)

    def num_params(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

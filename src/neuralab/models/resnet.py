"""CIFAR-style ResNets and their plain twins, from He et al. 2016, "Deep Residual Learning for
Image Recognition", §4.2.

A 3x3 conv stem with 16 channels, three stages of n basic blocks (n = (depth - 2) / 6) with
16/32/64 channels, stride 2 at the start of stages 2 and 3, global average pooling and a linear
head: 6n + 2 weighted layers. A "plain" net has the same layers without the identity shortcuts;
the paper's point is that the plain net gets *worse* with depth while the ResNet gets better.

Shortcuts where the shape changes (§3.3): option A is parameter-free (strided subsampling and
zero-padded channels), so a resnet and its plain twin have exactly the same parameters; option
B is a 1x1 conv + BN projection. ``activation`` and ``batchnorm`` exist to study vanishing
gradients (sigmoid vs ReLU, BN on/off).

``preact`` gives He et al. 2016b, "Identity Mappings in Deep Residual Networks": each block is
``x + conv(act(bn(conv(act(bn(x))))))``, with one last ``act(bn(.))`` before the pooling, so
nothing but the shortcuts lies on the path from the head down to the stem. With post-activation
blocks every block's activation still sits on that path, which is why a post-activation sigmoid
ResNet still has a vanishing gradient. A plain net is the same chain of layers either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from neuralab.models.base import (
    ACTIVATIONS,
    ImageClassifier,
    ImageModelConfig,
    check,
    check_choice,
    register_model,
)


def conv3x3(c_in: int, c_out: int, stride: int, config: ResNetConfig) -> nn.Conv2d:
    """3x3 conv with padding 1; a bias only when no BatchNorm follows to make it redundant."""
    return nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=not config.batchnorm)


def norm(channels: int, config: ResNetConfig) -> nn.Module:
    return nn.BatchNorm2d(channels) if config.batchnorm else nn.Identity()


class ShortcutA(nn.Module):
    """Option A: subsample by ``stride`` and zero-pad the new channels; no parameters."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.extra_channels, self.stride = c_out - c_in, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]  # (B, C_in, H/s, W/s)
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))  # (B, C_out, H/s, W/s)


def shortcut(c_in: int, c_out: int, stride: int, config: ResNetConfig) -> nn.Module:
    """Identity where the shape is kept; option A or B (projection) where it changes."""
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    if config.shortcut == "A":
        return ShortcutA(c_in, c_out, stride)
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 1, stride, bias=not config.batchnorm), norm(c_out, config)
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs, ``act(bn(conv(act(bn(conv(x))))) + shortcut(x))`` (He et al. 2016, Fig. 2),
    or with ``config.preact`` ``conv(act(bn(conv(act(bn(x)))))) + shortcut(x)`` (2016b, Fig. 4e).

    Without ``config.residual`` the ``+ shortcut(x)`` is left out: same layers, no skip.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, config: ResNetConfig) -> None:
        super().__init__()
        self.preact = config.preact
        self.conv1 = conv3x3(c_in, c_out, stride, config)
        self.bn1 = norm(c_in if config.preact else c_out, config)
        self.act1 = ACTIVATIONS[config.activation]()
        self.conv2 = conv3x3(c_out, c_out, 1, config)
        self.bn2 = norm(c_out, config)
        self.act2 = ACTIVATIONS[config.activation]()
        self.shortcut = shortcut(c_in, c_out, stride, config) if config.residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact:
            out = self.conv1(self.act1(self.bn1(x)))  # (B, C_out, H/s, W/s)
            out = self.conv2(self.act2(self.bn2(out)))  # (B, C_out, H/s, W/s)
            return out if self.shortcut is None else out + self.shortcut(x)
        out = self.act1(self.bn1(self.conv1(x)))  # (B, C_out, H/s, W/s)
        out = self.bn2(self.conv2(out))  # (B, C_out, H/s, W/s)
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.act2(out)


def stage(c_in: int, c_out: int, num_blocks: int, stride: int, config: ResNetConfig) -> nn.Module:
    """``num_blocks`` basic blocks; the first one changes width and resolution."""
    blocks = [BasicBlock(c_in, c_out, stride, config)]
    blocks += [BasicBlock(c_out, c_out, 1, config) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


@dataclass(frozen=True)
class ResNetConfig(ImageModelConfig):
    depth: int = 20  # 6n + 2
    widths: tuple[int, int, int] = (16, 32, 64)
    residual: bool = True
    shortcut: str = "A"  # "A": subsample + zero-pad; "B": 1x1 conv + BN projection
    activation: str = "relu"
    batchnorm: bool = True
    preact: bool = False  # pre-activation blocks (He et al. 2016b)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            self.depth >= 8 and (self.depth - 2) % 6 == 0,
            f"depth must be 6n + 2 for n >= 1 (8, 14, 20, 32, 44, 56, 110, ...), got {self.depth}",
        )
        check(
            len(self.widths) == 3 and all(w >= 1 for w in self.widths),
            f"widths must be 3 sizes >= 1, got {self.widths}",
        )
        check_choice("shortcut", self.shortcut, ("A", "B"))
        check(
            self.shortcut == "B" or list(self.widths) == sorted(self.widths),
            f"shortcut 'A' zero-pads channels, so widths must not decrease, got {self.widths}",
        )
        check_choice("activation", self.activation, ("relu", "sigmoid", "tanh"))


@register_model("preresnet20", depth=20, preact=True)
@register_model("preresnet56", depth=56, preact=True)
@register_model("resnet20", depth=20)
@register_model("resnet32", depth=32)
@register_model("resnet56", depth=56)
@register_model("plain20", depth=20, residual=False)
@register_model("plain32", depth=32, residual=False)
@register_model("plain56", depth=56, residual=False)
class ResNet(ImageClassifier):
    Config = ResNetConfig

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__(config)
        n = (config.depth - 2) // 6
        w1, w2, w3 = config.widths
        stem = [conv3x3(config.in_channels, w1, 1, config)]
        if not config.preact:  # a pre-activation net normalises and activates in each block
            stem += [norm(w1, config), ACTIVATIONS[config.activation]()]
        self.stem = nn.Sequential(*stem)
        self.stages = nn.Sequential(
            stage(w1, w1, n, 1, config),
            stage(w1, w2, n, 2, config),
            stage(w2, w3, n, 2, config),
        )
        self.post = (
            nn.Sequential(norm(w3, config), ACTIVATIONS[config.activation]())
            if config.preact
            else nn.Identity()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(w3, config.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """Kaiming-normal convs (He et al. 2015, fan_out, gain of the activation); BN at 1, 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(
                    m.weight, mode="fan_out", nonlinearity=self.config.activation
                )
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.normalize(x))  # (B, w1, H, W)
        x = self.post(self.stages(x))  # (B, w3, H/4, W/4)
        return self.pool(x).flatten(1)  # (B, w3)

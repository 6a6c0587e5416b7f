"""A Vision Transformer, after Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words:
Transformers for Image Recognition at Scale".

The image is cut into non-overlapping ``patch_size`` x ``patch_size`` patches, each linearly
embedded (a Conv2d with kernel = stride = patch size is exactly that linear map, applied to
every patch). A learned class token is prepended, learned position embeddings are added (Eq. 1),
and the 1 + N tokens go through ``n_layer`` bidirectional pre-LN blocks (Eq. 2-3). The class
token's output, after a final LayerNorm (Eq. 4), is the feature vector the linear ``head`` maps
to logits.

Patches of 4 suit the small images here: 28x28 gives 7x7 = 49 tokens, 32x32 gives 64, 8x8 gives
4. Init follows timm: truncated normal(0, 0.02) for Linear weights, position embeddings and the
class token, zero biases, and the patch embedding initialised like a Linear layer on the
flattened patch (Xavier-uniform, as in the reference JAX code).

``stem="conv"`` replaces the patchify layer by a small convolutional stem with the same output
grid (stride-2 3x3 convs with BatchNorm and ReLU, then a 1x1 conv to d_model), after Xiao et
al. 2021, "Early Convolutions Help Transformers See Better": the same Transformer then trains
faster and more stably, which matters on a CPU budget (the fashion_vit preset uses it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from neuralab.models.attention import ATTN_IMPLS, Block, run_blocks
from neuralab.models.base import (
    ImageClassifier,
    ImageModelConfig,
    check,
    check_choice,
    register_model,
)


@dataclass(frozen=True)
class ViTConfig(ImageModelConfig):
    patch_size: int = 4
    d_model: int = 128
    n_layer: int = 6
    n_heads: int = 4
    mlp_ratio: int = 4  # MLP hidden width = mlp_ratio * d_model
    dropout: float = 0.0
    attn_impl: str = "sdpa"  # "sdpa": fused kernel; "manual": the formula, spelled out
    stem: str = "patch"  # "patch": one linear map per patch; "conv": a convolutional stem

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.patch_size >= 1, f"patch_size must be >= 1, got {self.patch_size}")
        check(
            self.image_size % self.patch_size == 0,
            f"image_size={self.image_size} is not divisible by patch_size={self.patch_size}; "
            "pick a patch_size that divides it",
        )
        check(self.n_layer >= 1, f"n_layer must be >= 1, got {self.n_layer}")
        check(self.n_heads >= 1, f"n_heads must be >= 1, got {self.n_heads}")
        check(
            self.d_model >= 1 and self.d_model % self.n_heads == 0,
            f"d_model={self.d_model} must be a positive multiple of n_heads={self.n_heads}",
        )
        check(self.mlp_ratio >= 1, f"mlp_ratio must be >= 1, got {self.mlp_ratio}")
        check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        check_choice("attn_impl", self.attn_impl, ATTN_IMPLS)
        check_choice("stem", self.stem, ("patch", "conv"))
        check(
            self.stem == "patch" or self.patch_size & (self.patch_size - 1) == 0,
            f"stem='conv' needs a power-of-2 patch_size, got {self.patch_size}",
        )

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def conv_stem(c_in: int, d: int, patch: int) -> nn.Sequential:
    """log2(patch) stride-2 3x3 conv-BN-ReLU layers (widths growing to d/2), then a 1x1 conv
    to d: the same (d, H/patch, W/patch) grid as patchify."""
    layers: list[nn.Module] = []
    steps = patch.bit_length() - 1
    width = max(d // 2**steps, 8)
    for _ in range(steps):
        layers += [
            nn.Conv2d(c_in, width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        c_in, width = width, width * 2
    layers.append(nn.Conv2d(c_in, d, 1))
    return nn.Sequential(*layers)


@register_model("vit")
class ViT(ImageClassifier):
    Config = ViTConfig

    def __init__(self, config: ViTConfig) -> None:
        super().__init__(config)
        d, p = config.d_model, config.patch_size
        if config.stem == "conv":
            self.patch_embed = conv_stem(config.in_channels, d, p)
        else:
            self.patch_embed = nn.Conv2d(config.in_channels, d, kernel_size=p, stride=p)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + config.num_patches, d))
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(
                d,
                config.n_heads,
                causal=False,
                dropout=config.dropout,
                attn_impl=config.attn_impl,
                mlp_ratio=config.mlp_ratio,
            )
            for _ in range(config.n_layer)
        )
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, config.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """timm's ViT init: trunc-normal(0.02) Linears and embeddings, zero biases."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if isinstance(self.patch_embed, nn.Conv2d):
            w = self.patch_embed.weight  # (d, C, p, p): a Linear from C*p*p to d
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))
            nn.init.zeros_(self.patch_embed.bias)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _body(self, x: torch.Tensor, need_weights: bool) -> tuple[torch.Tensor, list]:
        size = self.config.image_size
        check(
            tuple(x.shape[-2:]) == (size, size),
            f"ViT was built for {size}x{size} images, got {tuple(x.shape[-2:])}",
        )
        x = self.patch_embed(self.normalize(x))  # (B, d, H/p, W/p)
        x = x.flatten(2).transpose(1, 2)  # (B, N, d): patches in row-major order
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, d)
        x = self.drop(torch.cat([cls, x], dim=1) + self.pos_embed)  # (B, 1 + N, d)
        x, maps = run_blocks(self.blocks, x, need_weights)  # (B, 1 + N, d)
        return self.ln_f(x), maps

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images in [0, 1] -> (B, d_model): the class token's output."""
        return self._body(x, need_weights=False)[0][:, 0]  # (B, d)

    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """One (B, n_heads, 1 + N, 1 + N) map of attention weights per layer, first layer first;
        token 0 is the class token, then the N patches in row-major order. Runs the manual
        attention path; call it under ``torch.no_grad()`` and in eval mode unless you want
        gradients or dropout."""
        return self._body(x, need_weights=True)[1]

"""Clip classifiers of Karpathy et al. 2014 ("Large-scale Video Classification with
Convolutional Neural Networks", Fig. 1 and Sec. 2), small enough for a CPU.

Each takes (B, T, C, H, W) clips in [0, 1] and differs in where time is fused:

- ``video_single``: a 2D CNN on the middle frame (frame T // 2) alone.
- ``video_late``: the same 2D tower, shared, on the first and the last frame (15 frames apart
  for T = 16), merged at the first fully connected layer.
- ``video_early``: the first convolution spans all T frames (frames stacked as channels);
  the rest is 2D.
- ``video_slow``: 3D convolutions at every level, each extending in time what the one below
  saw: 4 frames at stride 2, then 3 of those at stride 2, then 3 more, so the last level
  sees all 16 frames (the paper's 4, 2, 2 over 10 frames, stretched to 16).
- ``video_multires``: slow fusion in two streams of half the pixels each, a fovea (the
  centre crop at full resolution) and a context (the whole frame at half resolution),
  merged at the first fully connected layer.

Beyond the paper, two later ways to see time:

- ``video_lstm``: LRCN (Donahue et al. 2015): the 2D tower on every frame, its features
  into an LSTM (torch's fused one), the last step's output classified.
- ``video_c3d``: C3D (Tran et al. 2015): 3×3×3 convolutions, padded in time, at every level
  (time stride 1, then 2, then 2), the time left averaged.
- ``video_transformer``: TimeSformer's divided space-time attention (Bertasius et al.
  2021): tubelets of 2 frames × 16×16 pixels become tokens; each block attends across time
  among the tokens of one place, then across space among the tokens of one time, then
  applies the MLP; the tokens' mean is classified.

Every tower ends in a 4×4 average pooling, flattened, so the fully connected layers know
where things are (the paper's towers end in a spatial map that the FC layer reads whole).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuralab.models.attention import MLP, MultiHeadSelfAttention
from neuralab.models.base import ImageModelConfig, Normalize, check, register_model

FUSIONS = ("single", "late", "early", "slow", "multires", "lstm", "c3d")


@dataclass(frozen=True)
class VideoConfig(ImageModelConfig):
    image_size: int = 64
    frames: int = 16  # frames per clip
    fusion: str = "slow"  # where the frames meet: one of FUSIONS
    widths: tuple[int, ...] = (32, 64, 128)  # channels of the three convolution levels
    hidden: int = 256  # the fully connected layer
    dropout: float = 0.3  # before the classifier

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.fusion in FUSIONS, f"fusion must be one of {', '.join(FUSIONS)}")
        check(self.frames >= 2, f"frames must be >= 2, got {self.frames}")
        check(len(self.widths) == 3, f"widths must be 3 level sizes, got {self.widths}")
        check(all(w >= 1 for w in self.widths), f"widths must be >= 1, got {self.widths}")
        check(self.hidden >= 1, f"hidden must be >= 1, got {self.hidden}")
        check(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        check(self.image_size >= 16, f"clips need image_size >= 16, got {self.image_size}")
        if self.fusion == "slow" or self.fusion == "multires":
            check(self.frames >= 8, f"slow fusion needs frames >= 8, got {self.frames}")


def conv2d_level(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, 2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def conv3d_level(c_in: int, c_out: int, time: int, stride: int, pad: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, (time, 3, 3), (stride, 2, 2), (pad, 1, 1), bias=False),
        nn.BatchNorm3d(c_out),
        nn.ReLU(inplace=True),
    )


def slow_levels(frames: int) -> list[tuple[int, int, int]]:
    """(temporal extent, stride, padding) of the three slow-fusion levels, chosen so that
    the last level's extent covers what is left of the frames."""
    first = (4, 2, 0)
    left = (frames - 4) // 2 + 1
    second = (3, 2, 0) if left >= 3 else (left, 1, 0)
    left = (left - second[0]) // second[1] + 1
    return [first, second, (left, 1, 0)]


C3D_LEVELS = [(3, 1, 1), (3, 2, 1), (3, 2, 1)]  # C3D's 3×3×3 kernels, padded in time


class Tower2d(nn.Sequential):
    """(N, c_in, H, W) -> (N, widths[-1]·16): three stride-2 levels and a 4×4 pooling."""

    def __init__(self, c_in: int, widths: tuple[int, ...]) -> None:
        chans = (c_in, *widths)
        super().__init__(
            *(conv2d_level(a, b) for a, b in zip(chans[:-1], chans[1:], strict=True)),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
        )


class Tower3d(nn.Module):
    """(N, c_in, T, H, W) -> (N, widths[-1]·16): three 3D levels of the given (temporal
    extent, stride, padding), then the time left averaged and a 4×4 pooling."""

    def __init__(
        self, c_in: int, widths: tuple[int, ...], levels: list[tuple[int, int, int]]
    ) -> None:
        super().__init__()
        chans = (c_in, *widths)
        self.levels = nn.Sequential(
            *(
                conv3d_level(a, b, *level)
                for a, b, level in zip(chans[:-1], chans[1:], levels, strict=True)
            )
        )
        self.pool = nn.AdaptiveAvgPool3d((1, 4, 4))

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.levels(x)).flatten(1)


class VideoNet(nn.Module):
    """A clip classifier of one fusion kind (see the module's docstring)."""

    Config: ClassVar[type[VideoConfig]] = VideoConfig
    kind: ClassVar[str] = "video"

    def __init__(self, config: VideoConfig) -> None:
        super().__init__()
        self.config = config
        c, w = config.in_channels, config.widths
        self.normalize = Normalize(config.mean, config.std)
        fusion = config.fusion
        features = w[-1] * 16
        if fusion in ("single", "late", "lstm"):
            self.tower = Tower2d(c, w)
        elif fusion == "early":
            self.tower = Tower2d(c * config.frames, w)
        elif fusion in ("slow", "c3d"):
            levels = C3D_LEVELS if fusion == "c3d" else slow_levels(config.frames)
            self.tower = Tower3d(c, w, levels)
        else:
            self.fovea = Tower3d(c, w, slow_levels(config.frames))
            self.context = Tower3d(c, w, slow_levels(config.frames))
        if fusion == "lstm":
            self.lstm = nn.LSTM(features, config.hidden, batch_first=True)
            features = config.hidden
        elif fusion in ("late", "multires"):
            features *= 2
        self.head = nn.Sequential(
            nn.Linear(features, config.hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.num_classes),
        )

    def frames_used(self) -> list[int] | None:
        """The frames the model reads, or None for all of them."""
        t = self.config.frames
        return {"single": [t // 2], "late": [0, t - 1]}.get(self.config.fusion)

    def features(self, x: Tensor) -> Tensor:
        b, t, c, h, w = x.shape
        x = self.normalize(x.reshape(b * t, c, h, w)).view(b, t, c, h, w)
        fusion = self.config.fusion
        if fusion == "single":
            return self.tower(x[:, t // 2])
        if fusion == "late":
            return torch.cat([self.tower(x[:, 0]), self.tower(x[:, -1])], 1)
        if fusion == "early":
            return self.tower(x.reshape(b, t * c, h, w))
        if fusion == "lstm":
            steps = self.tower(x.reshape(b * t, c, h, w)).view(b, t, -1)
            return self.lstm(steps)[0][:, -1]
        x = x.transpose(1, 2)  # (B, C, T, H, W)
        if fusion in ("slow", "c3d"):
            return self.tower(x)
        top, left = h // 4, w // 4
        fovea = x[..., top : top + h // 2, left : left + w // 2]
        context = F.avg_pool3d(x, (1, 2, 2))
        return torch.cat([self.fovea(fovea), self.context(context)], 1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, C, H, W) clips in [0, 1] -> (B, num_classes) logits."""
        check(
            x.dim() == 5 and x.shape[1] == self.config.frames,
            f"expected (B, {self.config.frames}, C, H, W) clips, got {tuple(x.shape)}",
        )
        return self.head(self.features(x))

    def num_params(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


for _fusion in FUSIONS:
    register_model(f"video_{_fusion}", fusion=_fusion)(VideoNet)


@dataclass(frozen=True)
class VideoTransformerConfig(ImageModelConfig):
    image_size: int = 64
    frames: int = 16
    patch: int = 16  # a token's side in pixels
    tubelet: int = 2  # a token's length in frames
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            self.patch >= 1 and self.image_size % self.patch == 0,
            f"image_size ({self.image_size}) must be a multiple of patch ({self.patch})",
        )
        check(
            self.tubelet >= 1 and self.frames % self.tubelet == 0,
            f"frames ({self.frames}) must be a multiple of tubelet ({self.tubelet})",
        )
        check(self.n_layers >= 1, f"n_layers must be >= 1, got {self.n_layers}")
        check(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")


class DividedBlock(nn.Module):
    """Pre-LN: ``x + time_attn``, then ``x + space_attn``, then ``x + mlp``, over (B, T, N, d)
    tokens (T times, N places)."""

    def __init__(self, d: int, heads: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.ln_time, self.ln_space, self.ln_mlp = (nn.LayerNorm(d) for _ in range(3))
        self.time = MultiHeadSelfAttention(d, heads, causal=False, dropout=dropout)
        self.space = MultiHeadSelfAttention(d, heads, causal=False, dropout=dropout)
        self.mlp = MLP(d, mlp_ratio, dropout)

    def attend_time(self, x: Tensor) -> Tensor:
        """Each place's tokens attend to that place's tokens at every time."""
        b, t, n, d = x.shape
        seq = self.ln_time(x).transpose(1, 2).reshape(b * n, t, d)
        return x + self.time(seq).view(b, n, t, d).transpose(1, 2)

    def attend_space(self, x: Tensor) -> Tensor:
        """Each time's tokens attend to that time's tokens at every place."""
        b, t, n, d = x.shape
        return x + self.space(self.ln_space(x).reshape(b * t, n, d)).view(b, t, n, d)

    def forward(self, x: Tensor) -> Tensor:
        x = self.attend_space(self.attend_time(x))
        return x + self.mlp(self.ln_mlp(x))


@register_model("video_transformer")
class VideoTransformer(nn.Module):
    """A small TimeSformer (see the module's docstring)."""

    Config: ClassVar[type[VideoTransformerConfig]] = VideoTransformerConfig
    kind: ClassVar[str] = "video"

    def __init__(self, config: VideoTransformerConfig) -> None:
        super().__init__()
        self.config = config
        c, d, p = config.in_channels, config.d_model, config.patch
        self.normalize = Normalize(config.mean, config.std)
        self.embed = nn.Conv3d(c, d, (config.tubelet, p, p), (config.tubelet, p, p))
        places = (config.image_size // p) ** 2
        self.pos_space = nn.Parameter(0.02 * torch.randn(1, 1, places, d))
        self.pos_time = nn.Parameter(0.02 * torch.randn(1, config.frames // config.tubelet, 1, d))
        self.blocks = nn.Sequential(
            *(
                DividedBlock(d, config.n_heads, config.mlp_ratio, config.dropout)
                for _ in range(config.n_layers)
            )
        )
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, config.num_classes)

    def frames_used(self) -> None:
        return None

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, C, H, W) clips in [0, 1] -> (B, num_classes) logits."""
        cfg = self.config
        check(
            x.dim() == 5 and x.shape[1] == cfg.frames and x.shape[-1] == cfg.image_size,
            f"expected (B, {cfg.frames}, C, {cfg.image_size}, {cfg.image_size}) clips, "
            f"got {tuple(x.shape)}",
        )
        b, t, c, h, w = x.shape
        x = self.normalize(x.reshape(b * t, c, h, w)).view(b, t, c, h, w)
        tokens = self.embed(x.transpose(1, 2)).flatten(3).permute(0, 2, 3, 1)  # (B, T', N, d)
        tokens = self.blocks(tokens + self.pos_time + self.pos_space)
        return self.head(self.ln(tokens).mean(dim=(1, 2)))

    def num_params(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

"""What every detector shares: a ResNet backbone with a feature-pyramid merge, the heads'
convolutions, the targets' layout and the detections' type.

The backbone is the registry's ResNet made for dense prediction: a stride-2 3×3 stem, then
four stages of the basic blocks of ``resnet.py`` (He et al. 2016) at strides 2, 4, 8 and 16,
and the top-down path of a feature pyramid network (Lin et al. 2017, "Feature Pyramid
Networks for Object Detection"): 1×1 lateral convolutions, nearest upsampling and sums, down
to one map at stride 4 on which every head predicts. Both detectors (``centernet``,
``retinanet``) use exactly this backbone, so their comparison is one of heads and losses.

Targets are a (B, K, 5) float tensor per batch: ``x0, y0, x1, y1, label`` for up to K objects
of each image, padded with rows whose label is -1 (``pad_targets``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuralab.models.base import ImageModelConfig, Normalize, check
from neuralab.models.boxes import batched_nms
from neuralab.models.resnet import ResNetConfig, stage

STRIDE = 4  # the heads' resolution: one cell per 4×4 input pixels
BLOCK_OPTIONS = ResNetConfig(shortcut="B")  # post-activation basic blocks, BN, projections


class Detections(NamedTuple):
    """One image's detections, best score first: boxes (K, 4) xyxy pixels, scores (K,) in
    [0, 1], labels (K,) class ids."""

    boxes: Tensor
    scores: Tensor
    labels: Tensor


@dataclass(frozen=True)
class DetectorConfig(ImageModelConfig):
    in_channels: int = 3
    image_size: int = 96
    widths: tuple[int, ...] = (16, 32, 64, 128)  # channels of the stages, stride 2 to 16
    blocks: int = 1  # basic blocks per stage
    neck: int = 64  # channels of the merged map and of the heads
    head_convs: int = 2  # 3×3 conv + BN + ReLU layers in each head before its output
    score_threshold: float = 0.05  # detections scoring less are dropped
    nms_iou: float = 0.5  # class-wise NMS threshold (1: no NMS)
    max_detections: int = 100  # per image, as COCO's evaluation counts them

    def __post_init__(self) -> None:
        super().__post_init__()
        check(len(self.widths) == 4, f"widths must be 4 stage sizes, got {self.widths}")
        check(all(w >= 1 for w in self.widths), f"widths must be >= 1, got {self.widths}")
        check(self.blocks >= 1, f"blocks must be >= 1, got {self.blocks}")
        check(self.neck >= 1 and self.head_convs >= 0, "neck must be >= 1, head_convs >= 0")
        check(self.image_size >= 32, f"a detector needs image_size >= 32, got {self.image_size}")
        check(0 <= self.score_threshold < 1, "score_threshold must be in [0, 1)")
        check(0 < self.nms_iou <= 1, f"nms_iou must be in (0, 1], got {self.nms_iou}")
        check(self.max_detections >= 1, "max_detections must be >= 1")


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class Backbone(nn.Module):
    """(B, C, H, W) normalised images -> (B, neck, H/4, W/4) features."""

    def __init__(self, config: DetectorConfig) -> None:
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


def head(config: DetectorConfig, out_channels: int, prior: float | None = None) -> nn.Sequential:
    """``head_convs`` 3×3 conv-BN-ReLU layers and a 3×3 output convolution; with ``prior``, the
    output's bias starts at logit(prior), so that an untrained classifier predicts "object"
    with probability ``prior`` everywhere (Lin et al. 2017, RetinaNet §4.1) and the many
    background cells do not swamp the first steps."""
    layers = [conv_bn_relu(config.neck, config.neck) for _ in range(config.head_convs)]
    out = nn.Conv2d(config.neck, out_channels, 3, padding=1)
    nn.init.normal_(out.weight, std=0.01)
    nn.init.constant_(out.bias, 0.0 if prior is None else -math.log((1 - prior) / prior))
    return nn.Sequential(*layers, out)


class Detector(nn.Module):
    """Base of the detectors: ``forward(x)`` gives the heads' raw outputs, one tensor (so
    torch.compile, the EMA and attacks treat it as any model's output); ``loss(out, targets)``
    and ``decode(out)`` read it; ``detect(x)`` is ``decode(forward(x))`` without gradients."""

    Config = DetectorConfig
    kind = "detect"

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        self.config = config
        self.normalize = Normalize(config.mean, config.std)
        self.backbone = Backbone(config)

    def loss(self, out: Tensor, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The training loss of a batch and its parts, from ``forward``'s output and the
        (B, K, 5) targets."""
        raise NotImplementedError

    def decode(self, out: Tensor) -> list[Detections]:
        """Each image's detections from ``forward``'s output."""
        raise NotImplementedError

    @torch.no_grad()
    def detect(self, x: Tensor) -> list[Detections]:
        """Each image's detections; (B, C, H, W) images in [0, 1]."""
        return self.decode(self(x))

    def finish(self, boxes: Tensor, scores: Tensor, labels: Tensor) -> Detections:
        """One image's candidates clipped to the image, class-wise NMS, the best
        ``max_detections``."""
        c = self.config
        boxes = boxes.clamp(0, c.image_size)
        keep = scores > c.score_threshold
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        if c.nms_iou < 1:
            order = batched_nms(boxes.float(), scores.float(), labels, c.nms_iou)
        else:
            order = scores.argsort(descending=True, stable=True)
        order = order[: c.max_detections]
        return Detections(boxes[order], scores[order], labels[order])

    def num_params(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def pad_targets(boxes: list[Tensor], labels: list[Tensor], max_objects: int) -> Tensor:
    """(B, max_objects, 5) targets from each image's boxes (M_i, 4) and labels (M_i,)."""
    out = torch.full((len(boxes), max_objects, 5), -1.0)
    for i, (b, lab) in enumerate(zip(boxes, labels, strict=True)):
        check(len(b) <= max_objects, f"image {i} has {len(b)} objects, more than {max_objects}")
        out[i, : len(b), :4] = b.float()
        out[i, : len(b), 4] = lab.float()
    return out


def unwrap(model: nn.Module) -> nn.Module:
    """The detector inside a torch.compile wrapper or an EMA (AveragedModel)."""
    while not isinstance(model, Detector):
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        check(inner is not None, f"{type(model).__name__} is not a detector")
        model = inner
    return model

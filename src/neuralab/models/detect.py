"""What every detector shares: the backbone, the heads' convolutions, the targets' layout and
the detections' type.

Both detectors (``centernet``, ``retinanet``) predict on exactly the same map, the stride-4
output of ``dense.Backbone`` (the registry's ResNet blocks with a feature-pyramid merge), so
their comparison is one of heads and losses.

Targets are a (B, K, 5) float tensor per batch: ``x0, y0, x1, y1, label`` for up to K objects
of each image, padded with rows whose label is -1 (``pad_targets``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from neuralab.models.base import Normalize, check
from neuralab.models.boxes import batched_nms
from neuralab.models.dense import Backbone, DenseConfig, conv_bn_relu


class Detections(NamedTuple):
    """One image's detections, best score first: boxes (K, 4) xyxy pixels, scores (K,) in
    [0, 1], labels (K,) class ids."""

    boxes: Tensor
    scores: Tensor
    labels: Tensor


@dataclass(frozen=True)
class DetectorConfig(DenseConfig):
    score_threshold: float = 0.05  # detections scoring less are dropped
    nms_iou: float = 0.5  # class-wise NMS threshold (1: no NMS)
    max_detections: int = 100  # per image, as COCO's evaluation counts them
    head_convs: int = 2  # 3×3 conv + BN + ReLU layers in each head before its output

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.head_convs >= 0, f"head_convs must be >= 0, got {self.head_convs}")
        check(0 <= self.score_threshold < 1, "score_threshold must be in [0, 1)")
        check(0 < self.nms_iou <= 1, f"nms_iou must be in (0, 1], got {self.nms_iou}")
        check(self.max_detections >= 1, "max_detections must be >= 1")


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

    Config: ClassVar[type[DetectorConfig]] = DetectorConfig
    kind: ClassVar[str] = "detect"

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
        c = self.config.in_channels
        check(
            x.ndim == 4 and x.shape[1] == c,
            f"a detector of {c}-channel images needs (B, {c}, H, W) images, got {tuple(x.shape)}",
        )
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

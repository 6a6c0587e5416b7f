"""RetinaNet-style single-stage detector: anchors, focal loss, box regression, NMS.

Lin, Goyal, Girshick, He & Dollár 2017, "Focal Loss for Dense Object Detection", on the
same backbone and stride-4 map as ``centernet`` (one pyramid level: the scenes' objects span
16-56 pixels, which a few anchor sizes cover). At every cell sit A = sizes × aspect ratios
anchors; a classification subnet predicts C sigmoid scores per anchor and a regression
subnet 4 box deltas (``boxes.encode``: centre shift over anchor size, log size ratio).

Assignment (§4): an anchor is positive for the object it overlaps most when that IoU is
≥ 0.5, background when its best IoU is < 0.4, and ignored in between; each object's
best-overlapping anchors are positive too, so no object goes unmatched. Loss: the sigmoid
focal loss ``-α_t (1 - p_t)^γ log p_t`` (α = 0.25, γ = 2) over every non-ignored anchor and
class, plus the smooth L1 of the positives' deltas (β = 0.1, Detectron2's value), both
divided by the number of positive anchors. Decoding: scores above ``score_threshold``, the
1000 best per image, class-wise NMS at IoU 0.5, the ``max_detections`` best.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from neuralab.models.base import check, register_model
from neuralab.models.boxes import box_iou, decode, encode
from neuralab.models.dense import STRIDE
from neuralab.models.detect import Detections, Detector, DetectorConfig, head

PRE_NMS = 1000  # candidates per image before NMS


@dataclass(frozen=True)
class RetinaNetConfig(DetectorConfig):
    anchor_sizes: tuple[float, ...] = (12.0, 20.0, 32.0, 52.0)  # sqrt(area), pixels
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # height / width
    positive_iou: float = 0.5
    negative_iou: float = 0.4
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    smooth_l1_beta: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        check(len(self.anchor_sizes) >= 1 and min(self.anchor_sizes) > 0, "anchor_sizes > 0")
        check(len(self.aspect_ratios) >= 1 and min(self.aspect_ratios) > 0, "aspect_ratios > 0")
        check(
            0 <= self.negative_iou <= self.positive_iou <= 1,
            f"need 0 <= negative_iou <= positive_iou <= 1, got {self.negative_iou}, "
            f"{self.positive_iou}",
        )


def make_anchors(height: int, width: int, sizes, ratios, stride: int = STRIDE) -> Tensor:
    """(H·W·A, 4) xyxy anchors, cell by cell (row-major), A = len(sizes)·len(ratios) per cell,
    centred on the cell's centre; an anchor of size s and ratio r is s/√r wide, s·√r high."""
    shapes = torch.tensor(
        [[s / math.sqrt(r), s * math.sqrt(r)] for s in sizes for r in ratios]
    )  # (A, 2)
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    centres = (torch.stack([xs, ys], dim=-1).reshape(-1, 1, 2) + 0.5) * stride  # (H·W, 1, 2)
    half = shapes[None] / 2
    return torch.cat([centres - half, centres + half], dim=-1).reshape(-1, 4)


def assign(
    targets: Tensor, anchors: Tensor, positive: float, negative: float
) -> tuple[Tensor, Tensor]:
    """For (B, K, 5) targets and (N, 4) anchors: the matched object of each anchor (B, N) and
    its state (B, N): 1 positive, 0 background, -1 ignored."""
    b, k, _ = targets.shape
    valid = targets[..., 4] >= 0  # (B, K)
    iou = box_iou(targets[..., :4].reshape(-1, 4), anchors).view(b, k, -1)
    iou = iou.masked_fill(~valid[..., None], -1.0)
    best_iou, matched = iou.max(dim=1)  # (B, N)
    state = torch.full_like(matched, -1)
    state[best_iou < negative] = 0
    state[best_iou >= positive] = 1
    # each object's best anchors (ties included) are positive for it
    object_best = iou.max(dim=2, keepdim=True).values  # (B, K, 1)
    forced = (iou == object_best) & valid[..., None] & (object_best > 0)  # (B, K, N)
    is_forced = forced.any(dim=1)
    matched = torch.where(is_forced, forced.float().argmax(dim=1), matched)
    state[is_forced] = 1
    return matched, state


def sigmoid_focal_loss(logits: Tensor, target: Tensor, alpha: float, gamma: float) -> Tensor:
    """Lin et al.'s focal loss, elementwise: ``-α_t (1 - p_t)^γ log p_t``."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    return alpha_t * (1 - p_t) ** gamma * ce


@register_model("retinanet")
class RetinaNet(Detector):
    """``forward(x)`` (B, C, H, W) in [0, 1] -> (B, A·(classes + 4), H/4, W/4): the A·classes
    class logits, then the A·4 box deltas, per cell."""

    Config = RetinaNetConfig

    def __init__(self, config: RetinaNetConfig) -> None:
        super().__init__(config)
        self.num_anchors = len(config.anchor_sizes) * len(config.aspect_ratios)
        self.classify = head(config, self.num_anchors * config.num_classes, prior=0.01)
        self.regress = head(config, self.num_anchors * 4)
        self._anchors: dict[tuple[int, int], Tensor] = {}

    def forward(self, x: Tensor) -> Tensor:
        features = self.backbone(self.normalize(x))
        return torch.cat([self.classify(features), self.regress(features)], dim=1)

    def anchors(self, height: int, width: int, device: torch.device) -> Tensor:
        key = (height, width)
        if key not in self._anchors:
            c = self.config
            self._anchors[key] = make_anchors(height, width, c.anchor_sizes, c.aspect_ratios)
        return self._anchors[key].to(device)

    def split(self, out: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, N, classes) logits, (B, N, 4) deltas and the (N, 4) anchors, anchor by anchor."""
        b, _, h, w = out.shape
        a, classes = self.num_anchors, self.config.num_classes
        logits = out[:, : a * classes].permute(0, 2, 3, 1).reshape(b, h * w * a, classes)
        deltas = out[:, a * classes :].permute(0, 2, 3, 1).reshape(b, h * w * a, 4)
        return logits, deltas, self.anchors(h, w, out.device)

    def loss(self, out: Tensor, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        c = self.config
        logits, deltas, anchors = self.split(out.float())
        matched, state = assign(targets, anchors, c.positive_iou, c.negative_iou)
        objects = targets.gather(1, matched[..., None].expand(-1, -1, 5))  # (B, N, 5)
        positive = state == 1
        n = positive.sum().clamp(min=1)
        onehot = torch.zeros_like(logits)
        onehot[positive, objects[positive][:, 4].long()] = 1.0
        counted = state >= 0
        focal = sigmoid_focal_loss(logits[counted], onehot[counted], c.focal_alpha, c.focal_gamma)
        wanted = encode(objects[positive][:, :4], anchors.expand_as(deltas)[positive])
        box = F.smooth_l1_loss(deltas[positive], wanted, beta=c.smooth_l1_beta, reduction="sum")
        parts = {"classification": focal.sum() / n, "box": box / n}
        return parts["classification"] + parts["box"], parts

    def decode(self, out: Tensor) -> list[Detections]:
        logits, deltas, anchors = self.split(out.float())
        classes = self.config.num_classes
        found = []
        for i in range(len(logits)):
            scores = logits[i].sigmoid().flatten()  # (N·classes,)
            scores, flat = scores.topk(min(PRE_NMS, len(scores)))
            anchor, labels = flat // classes, flat % classes
            boxes = decode(deltas[i, anchor], anchors[anchor])
            found.append(self.finish(boxes, scores, labels))
        return found

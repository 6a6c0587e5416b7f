"""CenterNet: an anchor-free detector that finds objects as the peaks of a heatmap.

Zhou, Wang & Krähenbühl 2019, "Objects as Points". On a map at stride R = 4 the model
predicts, for every cell, C class heatmaps, the object's size (w, h) and the sub-cell offset
of its centre. An object with box (x0, y0, x1, y1) is the point p = centre / R; its class's
heatmap target is a Gaussian around the cell ⌊p⌋, 1 at that cell. The loss (§3, eq. 1-3):

- heatmap: the penalty-reduced pixelwise focal loss of CornerNet (Law & Deng 2018),
  ``-1/N Σ (1-Ŷ)^α log Ŷ`` at the N object cells and ``-1/N Σ (1-Y)^β Ŷ^α log(1-Ŷ)``
  elsewhere, α = 2, β = 4: near a centre, where the target Y is close to 1, a confident
  prediction is barely penalised;
- size: L1 between the predicted and true (w, h) / R at each object's cell, weight 0.1;
- offset: L1 between the predicted offset and p - ⌊p⌋ at each object's cell, weight 1.

The Gaussian's spread follows TTFNet (Liu et al. 2019): σ_x = α_g·w / 6, σ_y = α_g·h / 6
in cells, α_g = 0.54, so a long object gets a long peak. Decoding keeps the cells that are
their 3×3 neighbourhood's maximum (the paper's substitute for NMS) and the 100 best; a
class-wise NMS follows only when ``nms_iou`` < 1, off by default as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from neuralab.models.base import check, register_model
from neuralab.models.dense import STRIDE
from neuralab.models.detect import Detections, Detector, DetectorConfig, head


@dataclass(frozen=True)
class CenterNetConfig(DetectorConfig):
    nms_iou: float = 1.0  # the 3×3 peak test replaces NMS (§4)
    gaussian_alpha: float = 0.54  # σ = alpha · side / 6 (TTFNet)
    size_weight: float = 0.1  # λ_size
    offset_weight: float = 1.0  # λ_off
    focal_alpha: float = 2.0
    focal_beta: float = 4.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.gaussian_alpha > 0, f"gaussian_alpha must be > 0, got {self.gaussian_alpha}")


def heatmap_targets(
    targets: Tensor, num_classes: int, height: int, width: int, alpha: float
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """From (B, K, 5) targets: the (B, C, H, W) Gaussian heatmaps (the max where two objects
    of a class overlap), and for each of the N objects its image, its cell index y·W + x, its
    size (N, 2) and its centre's offset (N, 2), both in cells."""
    valid = targets[..., 4] >= 0
    image = valid.nonzero()[:, 0]
    objects = targets[valid]  # (N, 5)
    boxes, labels = objects[:, :4] / STRIDE, objects[:, 4].long()
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    size = boxes[:, 2:] - boxes[:, :2]
    limit = torch.tensor([width - 1, height - 1], device=targets.device)
    cell = centre.floor().clamp(min=torch.zeros_like(limit), max=limit)
    sigma = (alpha * size / 6).clamp(min=1e-3)
    gx = torch.arange(width, device=targets.device, dtype=targets.dtype)
    gy = torch.arange(height, device=targets.device, dtype=targets.dtype)
    ex = ((gx[None, :] - cell[:, :1]) ** 2) / (2 * sigma[:, :1] ** 2)  # (N, W)
    ey = ((gy[None, :] - cell[:, 1:]) ** 2) / (2 * sigma[:, 1:] ** 2)  # (N, H)
    gauss = torch.exp(-(ey[:, :, None] + ex[:, None, :]))  # (N, H, W), 1 at the object's cell
    heat = torch.zeros(len(targets) * num_classes, height * width, device=targets.device)
    rows = (image * num_classes + labels)[:, None].expand(-1, height * width)
    heat.scatter_reduce_(0, rows, gauss.flatten(1).to(heat.dtype), "amax")
    index = (cell[:, 1] * width + cell[:, 0]).long()
    return heat.view(len(targets), num_classes, height, width), image, index, size, centre - cell


def focal_heatmap_loss(logits: Tensor, target: Tensor, alpha: float, beta: float) -> Tensor:
    """CornerNet's penalty-reduced focal loss, summed (divide by the number of objects)."""
    pos = target.eq(1)
    p = logits.sigmoid()
    pos_loss = -((1 - p) ** alpha * F.logsigmoid(logits))[pos].sum()
    neg_loss = -((1 - target) ** beta * p**alpha * F.logsigmoid(-logits))[~pos].sum()
    return pos_loss + neg_loss


@register_model("centernet")
class CenterNet(Detector):
    """``forward(x)`` (B, C, H, W) in [0, 1] -> (B, classes + 4, H/4, W/4): the heatmap logits,
    then size (w, h) and offset (x, y) in cells."""

    Config = CenterNetConfig

    def __init__(self, config: CenterNetConfig) -> None:
        super().__init__(config)
        self.heat = head(config, config.num_classes, prior=0.1)
        self.regress = head(config, 4)

    def forward(self, x: Tensor) -> Tensor:
        features = self.backbone(self.normalize(x))
        return torch.cat([self.heat(features), self.regress(features)], dim=1)

    def loss(self, out: Tensor, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        c = self.config
        out = out.float()
        logits, regress = out[:, : c.num_classes], out[:, c.num_classes :]
        b, _, h, w = logits.shape
        heat, image, index, size, offset = heatmap_targets(
            targets, c.num_classes, h, w, c.gaussian_alpha
        )
        n = max(len(index), 1)
        at_objects = regress.flatten(2)[image, :, index]  # (N, 4)
        parts = {
            "heatmap": focal_heatmap_loss(logits, heat, c.focal_alpha, c.focal_beta) / n,
            "size": F.l1_loss(at_objects[:, :2], size, reduction="sum") / n,
            "offset": F.l1_loss(at_objects[:, 2:], offset, reduction="sum") / n,
        }
        total = parts["heatmap"] + c.size_weight * parts["size"] + c.offset_weight * parts["offset"]
        return total, parts

    def decode(self, out: Tensor) -> list[Detections]:
        c = self.config
        out = out.float()
        heat = out[:, : c.num_classes].sigmoid()
        b, classes, h, w = heat.shape
        peaks = heat * (heat == F.max_pool2d(heat, 3, stride=1, padding=1))
        scores, flat = peaks.flatten(1).topk(min(c.max_detections, classes * h * w), dim=1)
        labels, cell = flat // (h * w), flat % (h * w)
        regress = out[:, c.num_classes :].flatten(2)  # (B, 4, H·W)
        found = []
        for i in range(b):
            size, offset = regress[i, :2, cell[i]].T, regress[i, 2:, cell[i]].T  # (K, 2)
            xy = torch.stack([cell[i] % w, cell[i] // w], dim=1).to(out.dtype) + offset
            half = size.clamp(min=0) / 2
            boxes = torch.cat([xy - half, xy + half], dim=1) * STRIDE
            found.append(self.finish(boxes, scores[i], labels[i]))
        return found

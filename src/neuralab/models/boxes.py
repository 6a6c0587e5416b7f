"""Box operations in plain torch: IoU, non-maximum suppression, anchor encodings.

Boxes are (..., 4) ``x0, y0, x1, y1`` in continuous pixel coordinates: a scene's integer box
with x1 and y1 exclusive covers exactly [x0, x1) × [y0, y1), so its width is x1 - x0. These
replace torchvision.ops (whose compiled operators do not load with the CPU torch wheel here);
tests/unit/test_boxes.py checks them against brute-force loops.
"""

from __future__ import annotations

import torch
from torch import Tensor


def box_area(boxes: Tensor) -> Tensor:
    """(...,) areas of (..., 4) boxes; 0 for an empty or inverted box."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(
        min=0
    )


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """(N, M) intersection over union of boxes a (N, 4) and b (M, 4); 0 where both are empty."""
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])  # (N, M, 2)
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])  # (N, M, 2)
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=-1)  # (N, M)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter / union.clamp(min=torch.finfo(inter.dtype).tiny)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression: the indices of the boxes kept, best score first.

    The highest-scoring box is kept and every box overlapping it by IoU > ``iou_threshold``
    is dropped; then the best of the rest, and so on. The IoU matrix is computed once and
    the loop runs once per kept box, not once per box.
    """
    order = scores.argsort(descending=True, stable=True)
    iou = box_iou(boxes[order], boxes[order])  # (N, N), rows and columns in score order
    alive = torch.ones(len(order), dtype=torch.bool, device=boxes.device)
    kept = []
    while True:
        candidates = alive.nonzero()
        if len(candidates) == 0:
            break
        i = int(candidates[0])
        kept.append(i)
        alive &= iou[i] <= iou_threshold
        alive[i] = False
    return order[torch.tensor(kept, dtype=torch.long, device=boxes.device)]


def batched_nms(boxes: Tensor, scores: Tensor, classes: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each class only: boxes of different classes never suppress each other.

    Each class's boxes are shifted by a multiple of the largest coordinate so that boxes of
    two classes cannot overlap, and one NMS runs over them all.
    """
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    shift = classes.to(boxes.dtype)[:, None] * (boxes.max() - boxes.min() + 1)
    return nms(boxes + shift, scores, iou_threshold)


def to_center(boxes: Tensor) -> Tensor:
    """(..., 4) xyxy -> (..., 4) centre x, centre y, width, height."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def from_center(boxes: Tensor) -> Tensor:
    """(..., 4) centre x, centre y, width, height -> (..., 4) xyxy."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def encode(boxes: Tensor, anchors: Tensor) -> Tensor:
    """The regression targets of ``boxes`` relative to their ``anchors`` (both (..., 4) xyxy):
    (dx, dy, dw, dh) = ((x - xa) / wa, (y - ya) / ha, log(w / wa), log(h / ha)) of the centres
    and sizes (Girshick et al. 2014, R-CNN, appendix C; used by SSD and RetinaNet)."""
    b, a = to_center(boxes), to_center(anchors)
    return torch.cat([(b[..., :2] - a[..., :2]) / a[..., 2:], (b[..., 2:] / a[..., 2:]).log()], -1)


def decode(deltas: Tensor, anchors: Tensor, max_log: float = 4.0) -> Tensor:
    """The boxes (..., 4) xyxy that ``deltas`` encode relative to ``anchors``: the inverse of
    ``encode``. Size deltas are clamped at ``max_log`` so an untrained head cannot overflow."""
    a = to_center(anchors)
    centre = deltas[..., :2] * a[..., 2:] + a[..., :2]
    size = deltas[..., 2:].clamp(max=max_log).exp() * a[..., 2:]
    return from_center(torch.cat([centre, size], dim=-1))

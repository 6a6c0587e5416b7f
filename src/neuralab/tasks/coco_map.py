"""Detection scores by COCO's own evaluation code (``pycocotools.cocoeval.COCOeval``).

Nothing here computes an average precision: the ground truth and the detections are handed
to pycocotools in memory, and its ``stats`` and ``eval["precision"]`` are read back. So the
numbers are the ones the COCO leaderboard would give for the same boxes.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor

from neuralab.models.detect import Detections


def _xywh(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def coco_map(truth: Tensor, found: Sequence[Detections], classes: Sequence[str]) -> dict[str, Any]:
    """COCO's mAP@[.5:.95] (``map``), mAP@0.5 (``map50``), mAP@0.75 (``map75``), each class's
    AP@[.5:.95] (``ap``, None for a class absent from the truth) and each class's
    precision-recall curve at IoU 0.5 (``pr50``: precision at ``recall``'s 101 points), for
    (N, K, 5) padded ground truth and one ``Detections`` per image."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    annotations = []
    for i, rows in enumerate(truth.numpy()):
        rows = rows[rows[:, 4] >= 0]
        for box, label in zip(_xywh(rows[:, :4]), rows[:, 4], strict=True):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": int(label) + 1,
                    "bbox": [float(v) for v in box],
                    "area": float(box[2] * box[3]),
                    "iscrowd": 0,
                }
            )
    dataset = {
        "images": [{"id": i + 1} for i in range(len(truth))],
        "annotations": annotations,
        "categories": [{"id": c + 1, "name": name} for c, name in enumerate(classes)],
    }
    rows = [
        np.column_stack(
            [
                np.full(len(d.scores), i + 1),
                _xywh(d.boxes.float().numpy()),
                d.scores.float().numpy(),
                d.labels.numpy() + 1,
            ]
        )
        for i, d in enumerate(found)
    ]
    results = np.concatenate(rows) if rows else np.zeros((0, 7))
    recall = np.linspace(0, 1, 101)
    if len(results) == 0 or not annotations:
        return {
            "map": 0.0,
            "map50": 0.0,
            "map75": 0.0,
            "ap": [None] * len(classes),
            "recall": recall.tolist(),
            "pr50": [[0.0] * len(recall) for _ in classes],
        }
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints as it goes
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    # precision: (IoU thresholds, recall points, classes, area ranges, max detections);
    # area "all" and 100 detections; -1 where a class has no ground truth
    precision = evaluation.eval["precision"][:, :, :, 0, -1]
    ap = [
        float(precision[:, :, c].mean()) if (precision[:, :, c] > -1).all() else None
        for c in range(len(classes))
    ]
    stats = evaluation.stats
    return {
        "map": max(float(stats[0]), 0.0),
        "map50": max(float(stats[1]), 0.0),
        "map75": max(float(stats[2]), 0.0),
        "ap": ap,
        "recall": recall.tolist(),
        "pr50": np.clip(precision[0].T, 0, 1).tolist(),  # (classes, 101)
    }

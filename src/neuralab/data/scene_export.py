"""What a scene set (``neuralab.data.scenes``) looks like to people and to other tools: counts
per class, objects per image and box sizes, and an export in COCO's detection format."""

from __future__ import annotations

import numpy as np

from neuralab.data.scenes import Scenes


def summary(scenes: Scenes, classes: tuple[str, ...]) -> dict:
    """Objects per class and per image, and a histogram of box sides (the longer one)."""
    sides = np.maximum(
        scenes.boxes[:, 2] - scenes.boxes[:, 0], scenes.boxes[:, 3] - scenes.boxes[:, 1]
    )
    edges = [0, 16, 24, 32, 40, 48, 56, 1_000]
    counts, _ = np.histogram(sides, bins=edges)
    return {
        "scenes": len(scenes),
        "objects": int(len(scenes.labels)),
        "objects_per_class": {c: int((scenes.labels == i).sum()) for i, c in enumerate(classes)},
        "objects_per_image": {
            int(k): int((scenes.counts == k).sum()) for k in np.unique(scenes.counts)
        },
        "box_side_px": {
            f"{lo}-{hi - 1}" if hi < 1_000 else f">={lo}": int(c)
            for lo, hi, c in zip(edges[:-1], edges[1:], counts, strict=True)
        },
    }


def coco_dict(scenes: Scenes, classes: tuple[str, ...], file_names: list[str]) -> dict:
    """The scene set in COCO's detection format (boxes as x, y, w, h; segmentations as
    uncompressed RLE of each visible instance mask), readable by pycocotools."""
    images, annotations = [], []
    size = scenes.images.shape[-1]
    for i in range(len(scenes)):
        images.append({"id": i + 1, "file_name": file_names[i], "width": size, "height": size})
        for k, j in enumerate(range(*scenes.objects(i).indices(len(scenes.labels))), start=1):
            x0, y0, x1, y1 = (int(v) for v in scenes.boxes[j])
            mask = (scenes.instances[i] == k).flatten(order="F")  # COCO's RLE is column-major
            starts = np.flatnonzero(mask[1:] != mask[:-1]) + 1  # where each run after the first
            runs = np.diff([0, *starts, mask.size]).tolist()
            if mask[0]:
                runs = [0, *runs]  # RLE counts start with a run of zeros
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": int(scenes.labels[j]) + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": int(mask.sum()),
                    "iscrowd": 0,
                    "segmentation": {"counts": runs, "size": [size, size]},
                }
            )
    categories = [{"id": i + 1, "name": c} for i, c in enumerate(classes)]
    return {"images": images, "annotations": annotations, "categories": categories}

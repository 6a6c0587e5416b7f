"""Object detection: a box and a class for every object of a scene.

The detector owns its loss (``centernet``: heatmap focal loss + L1 size and offset;
``retinanet``: focal loss over anchors + smooth L1 deltas); this kind of run feeds it (B, K, 5)
box targets, flips half the training scenes left-right (boxes with them), and scores
validation and test by COCO's own evaluation code (``coco_map``): mAP@[.5:.95], the
headline number, and mAP@0.5. The test step also draws a gallery of test scenes with the
detections beside the truth, and keeps each class's precision-recall curve for ``report``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from neuralab import plots
from neuralab.data import scenes
from neuralab.data.batches import Batch
from neuralab.models.base import unwrap
from neuralab.models.detect import Detections, Detector
from neuralab.runs import write_atomic
from neuralab.seed import derived_generator
from neuralab.tasks.base import TASKS
from neuralab.tasks.coco_map import coco_map
from neuralab.tasks.segment import SceneBatches, SceneTask

if TYPE_CHECKING:
    from neuralab.config import DataConfig, RunConfig

GALLERY = 16  # test scenes drawn in test_gallery.png


class FlippedSceneBatches(SceneBatches):
    """``SceneBatches`` whose scenes are mirrored left-right with probability 1/2, drawn from
    (seed, step), with their boxes (x0, x1) -> (S - x1, S - x0)."""

    def get(self, step: int) -> Batch:
        xb, yb, _ = super().get(step)  # fresh tensors (indexed copies), safe to change
        flip = torch.rand(len(xb), generator=derived_generator(self.seed, step, 1)) < 0.5
        xb[flip] = xb[flip].flip(-1)
        size = xb.shape[-1]
        flipped = yb[flip]
        valid = flipped[..., 4:] >= 0
        mirrored = torch.stack([size - flipped[..., 2], size - flipped[..., 0]], dim=-1)
        flipped[..., [0, 2]] = torch.where(valid, mirrored, flipped[..., [0, 2]])
        yb[flip] = flipped
        return Batch(xb, yb)


@torch.no_grad()
def detect_all(
    model: nn.Module, x: Tensor, y: Tensor, batch_size: int
) -> tuple[float, list[Detections]]:
    """The summed per-batch loss (weighted by batch size) and every image's detections, in
    eval mode; the model's mode is restored afterwards."""
    detector = unwrap(model, Detector)
    was_training = model.training
    model.eval()
    total, found = 0.0, []
    try:
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            out = model(xb)
            total += detector.loss(out, yb)[0].item() * len(xb)
            found += detector.decode(out)
    finally:
        model.train(was_training)
    return total, found


@TASKS.register("detect")
class DetectTask(SceneTask):
    """Boxes and classes of a scene set's objects; ``model(x)`` gives the detector's raw
    outputs, which its ``loss`` and ``decode`` read."""

    purpose = "detection"
    model_kind = "detect"
    monitors = ("val/map", "val/map50", "val/loss")
    headline = ("map", "map50")  # what `evaluate` gives that an attack report shows
    batches = FlippedSceneBatches

    def __init__(self, classes: tuple[str, ...]) -> None:
        super().__init__(classes)
        self.classes = classes
        self.num_classes = len(classes)

    def load(self, data_cfg: DataConfig, split: str, raw: bool = False) -> tuple[Tensor, Tensor]:
        """Images (N, 3, S, S) in [0, 1] (``raw``: uint8) and (N, K, 5) box targets."""
        return scenes.load_scene_boxes(data_cfg, split, raw)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        total, _ = unwrap(model, Detector).loss(model(x), y)
        return total, {"count": torch.tensor(len(x))}

    def attack_loss(self, model: nn.Module, out: Tensor, y: Tensor) -> Tensor:
        """What an attack ascends: the detector's training loss (a sum over the batch's
        objects divided by their number)."""
        return unwrap(model, Detector).loss(out, y)[0]

    def evaluate(self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> dict:
        total, found = detect_all(model, x, y, batch_size)
        return {"loss": total / max(len(x), 1), "found": found, **coco_map(y, found, self.classes)}

    def higher_is_better(self, monitor: str) -> bool:
        return monitor in ("val/map", "val/map50")

    def validate(self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> dict:
        result = self.evaluate(model, x, y, batch_size)
        return {"val/loss": result["loss"], "val/map": result["map"], "val/map50": result["map50"]}

    def test(
        self, cfg: RunConfig, run_dir: Path, model: nn.Module, data_cfg: DataConfig
    ) -> dict[str, Any]:
        """COCO mAP, mAP@0.5 and @0.75, per-class AP on the test scenes; the gallery
        (``test_gallery.png``) and the precision-recall curves (``test_pr.json``)."""
        x, y = self.load(data_cfg, "test")
        result = self.evaluate(model, x, y, cfg.train.eval_batch_size)
        plots.plot_detections(
            x[:GALLERY], result["found"][:GALLERY], self.classes, run_dir / "test_gallery.png",
            truth=y[:GALLERY],
        )  # fmt: skip
        precision = dict(zip(self.classes, result["pr50"], strict=True))
        curves = {"iou": 0.5, "recall": result["recall"], "precision": precision}
        write_atomic(run_dir / "test_pr.json", json.dumps(curves))
        return {
            "test/map": result["map"],
            "test/map50": result["map50"],
            "test/map75": result["map75"],
            "test/loss": result["loss"],
            "test/examples": len(x),
            "test/ap": dict(zip(self.classes, result["ap"], strict=True)),
        }

    def describe(self, run_dir: Path, summary: dict, test: dict) -> list[list[str]]:
        return [
            *super().describe(run_dir, summary, test),
            ["best val mAP", self.best_val(summary, "val/map")],
            ["test mAP@[.5:.95]", f"{test['test/map']:.4f} on {test['test/examples']} scenes"],
            ["test mAP@0.5", f"{test['test/map50']:.4f}"],
            ["gallery", str(run_dir / "test_gallery.png")],
        ]

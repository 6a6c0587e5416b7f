"""``neuralab predict`` and ``attack`` on a run trained on scenes: a segmenter's masks or a
detector's boxes drawn over each image file as a PNG (``--out``: the file for one image, a
folder for several); its mIoU or mAP under attack."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from neuralab.cli.common import print_json, table
from neuralab.data.image_files import read_image
from neuralab.models import model_kind


def _target(args: argparse.Namespace, path: str, suffix: str) -> Path:
    if len(args.images) > 1 or not args.out:
        return Path(args.out or ".") / f"{Path(path).stem}_{suffix}.png"
    return Path(args.out)


def predict_scenes(args: argparse.Namespace, run_dir: Path, cfg: Any, model: Any) -> int:
    """Each image file read as a colour scene of the run's size, predicted and drawn."""
    detect = model_kind(cfg.model.name) == "detect"
    size = (cfg.data.scene_size, cfg.data.scene_size)
    images = [read_image(p, channels=3, size=size, dark_background=False)[0] for p in args.images]
    out = [
        (predict_boxes if detect else predict_masks)(args, cfg, model, path, image)
        for path, image in zip(args.images, images, strict=True)
    ]
    if args.json:
        print_json({"run": str(run_dir), "predictions": out})
        return 0
    for item in out:
        if detect:
            found = ", ".join(f"{o['class']} {o['score']:.2f}" for o in item["objects"])
            print(f"{item['image']}: {found or 'no object found'}; drawn in {item['out']}")
        else:
            shares = ", ".join(f"{c} {f:.1%}" for c, f in item["pixels"].items())
            print(f"{item['image']}: {shares}; drawn in {item['out']}")
    return 0


def predict_masks(args, cfg, model, path: str, image: torch.Tensor) -> dict:
    """A segmenter's class for every pixel, drawn beside the image, and each class's share."""
    from neuralab.plots import plot_segmentation
    from neuralab.tasks.segment import SegmentTask

    classes = SegmentTask.from_config(cfg).classes
    with torch.no_grad():
        pred = model(image.unsqueeze(0))[0].argmax(dim=0)  # (S, S) class ids
    target = _target(args, path, "mask")
    plot_segmentation(image, pred, classes, target)
    share = torch.bincount(pred.flatten(), minlength=len(classes)).double() / pred.numel()
    found = {c: round(float(f), 4) for c, f in zip(classes, share, strict=True) if f > 0}
    return {"image": str(path), "out": str(target), "pixels": found}


def predict_boxes(args, cfg, model, path: str, image: torch.Tensor) -> dict:
    """A detector's boxes (xyxy pixels of the scene-sized image), classes and scores of the
    objects scoring at least ``--min-score``, drawn over the image."""
    from neuralab.models.base import unwrap
    from neuralab.models.detect import Detector
    from neuralab.plots import plot_detections
    from neuralab.tasks.detect import DetectTask

    classes = DetectTask.from_config(cfg).classes
    found = unwrap(model, Detector).detect(image.unsqueeze(0))
    target = _target(args, path, "boxes")
    plot_detections(image.unsqueeze(0), found, classes, target, min_score=args.min_score)
    boxes, scores, labels = found[0]
    objects = [
        {"class": classes[int(c)], "score": round(float(s), 4), "box": [round(v, 1) for v in b]}
        for b, s, c in zip(boxes.tolist(), scores, labels, strict=True)
        if s >= args.min_score
    ]
    return {"image": str(path), "out": str(target), "objects": objects}


def attack_scenes(args: argparse.Namespace, run_dir: Path, cfg: Any, model: Any, spec) -> int:
    """The test scenes' mIoU or mAP, clean and under the attack at each eps."""
    from neuralab.report.scene_attacks import attack_scenes as run_attack
    from neuralab.tasks import build_task

    task = build_task(cfg)
    x, y = task.load(cfg.data, "test")
    report = run_attack(task, model, x, y, spec, run_dir)
    if args.json:
        print_json({k: v for k, v in report.items() if k != "drawn"})
        return 0
    print(f"{spec.name} on {report['n']} test scenes of {run_dir} ({args.which} checkpoint), "
          f"seed {report['seed']}")  # fmt: skip
    keys = report["metrics"]
    rows = [["0 (clean)", *(f"{report['clean'][k]:.4f}" for k in keys)]]
    rows += [[f"{r['eps']:g}", *(f"{r[k]:.4f}" for k in keys)] for r in report["results"]]
    print(table(rows, ["eps", *keys]))
    print(f"report: {run_dir / 'attacks' / (spec.name + '.json')}; drawn: {report['drawn']}")
    return 0

"""fashion-scenes (issue 19): generating the scene set, and segmentation and detection on it.

Prints one JSON object per result (machine included): the time to generate the default scene
set; then for the chosen preset its test metrics against a baseline, its training wall time
and its inference speed at batch 64.

- ``fashion_scenes_seg`` (U-Net) and ``fashion_scenes_seg_fcn`` (FCN on the ResNet): mIoU
  and pixel accuracy against predicting background everywhere. Target: mIoU >= 0.80 within
  20 minutes of training on 2 cores.
- ``fashion_scenes_det`` (CenterNet) and ``fashion_scenes_det_anchor`` (RetinaNet-style):
  COCO mAP@[.5:.95], mAP@0.5 and per-class AP (pycocotools) against two references given
  the true boxes (perfect localisation): every box called the most common class, and each
  box's raw pixels classified by a logistic regression. Targets: mAP@0.5 >= 0.90 and
  mAP >= 0.60 within 20 minutes; >= 200 images/s at batch 64. ``--crop-cnn`` adds a ceiling
  for recognition: the true boxes (and true masks), each classified by a CNN trained on the
  train scenes' box crops (about 4 minutes more).

    python benchmarks/scenes.py                                # fashion_scenes_seg
    python benchmarks/scenes.py --preset fashion_scenes_det    # a detector
    python benchmarks/scenes.py --run runs/x                   # measure a run already trained
    python benchmarks/scenes.py --preset fashion_scenes_det --run runs/x --crop-cnn
    python benchmarks/scenes.py train.epochs=2                 # overrides for the preset
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from vision import emit, trained_or_given

from neuralab import config
from neuralab.data import scenes
from neuralab.models.detect import Detections
from neuralab.tasks import build_task
from neuralab.tasks.base import confusion_matrix
from neuralab.tasks.coco_map import coco_map
from neuralab.tasks.detect import DetectTask
from neuralab.tasks.segment import iou_scores
from neuralab.train import load_model


def segmentation_baseline(task, y: torch.Tensor) -> dict:
    """Background predicted everywhere."""
    background = iou_scores(confusion_matrix(torch.zeros_like(y), y, task.num_classes))
    return {"all_background": {k: background[k] for k in ("miou", "pixel_acc")}}


def crops(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every true box's pixels, resized to 3x28x28 and flattened, and its class."""
    import torch.nn.functional as F

    feats, labels = [], []
    for image, rows in zip(x, y, strict=True):
        for x0, y0, x1, y1, c in rows[rows[:, 4] >= 0].long().tolist():
            patch = image[:, y0:y1, x0:x1].unsqueeze(0)
            patch = patch.float() / 255 if patch.dtype == torch.uint8 else patch
            feats.append(F.interpolate(patch, size=(28, 28), mode="bilinear", antialias=True))
            labels.append(c)
    return torch.cat(feats).flatten(1), torch.tensor(labels)


def detection_baseline(task, cfg, y: torch.Tensor, x: torch.Tensor) -> dict:
    """Two references on the test scenes, both given the true boxes (perfect localisation):
    every box called the most common class (no recognition), and each box's raw pixels
    classified by a logistic regression trained on 8000 boxes of the train scenes, its top-3
    classes reported with their probabilities as scores."""
    from sklearn.linear_model import LogisticRegression

    boxes = [rows[rows[:, 4] >= 0] for rows in y]
    labels = y[..., 4][y[..., 4] >= 0].long()
    common = int(labels.bincount().argmax())
    found = [Detections(r[:, :4], torch.ones(len(r)), torch.full((len(r),), common)) for r in boxes]
    called = coco_map(y, found, task.classes)

    x_train, y_train = task.load(cfg.data, "train")
    features, classes = crops(x_train[:3000], y_train[:3000])
    model = LogisticRegression(max_iter=300, C=0.1).fit(features[:8000], classes[:8000])
    test_features, _ = crops(x, y)
    probs = torch.from_numpy(model.predict_proba(test_features.numpy())).float()
    logreg = coco_map(y, true_boxes_detections(boxes, probs), task.classes)
    return {
        f"true_boxes_all_called_{task.classes[common]}": {k: called[k] for k in ("map", "map50")},
        "true_boxes_raw_pixel_logistic_regression": {k: logreg[k] for k in ("map", "map50")},
    }


def true_boxes_detections(boxes: list[torch.Tensor], probs: torch.Tensor) -> list[Detections]:
    """Each true box reported three times, with its top-3 classes and their probabilities."""
    top, found, start = probs.topk(3, dim=1), [], 0
    for rows in boxes:
        n = len(rows)
        found.append(Detections(rows[:, :4].repeat_interleave(3, 0),
                                top.values[start : start + n].flatten(),
                                top.indices[start : start + n].flatten()))  # fmt: skip
        start += n
    return found


def true_masks_miou(task, cfg, y: torch.Tensor, predicted: torch.Tensor) -> dict:
    """Segmentation with perfect shapes: each test object's true visible mask painted with
    the class ``predicted`` for its box (in the order of ``y``'s rows), scored as the
    segmenters are (mIoU, pixel accuracy)."""
    found, _ = scenes.scene_set(cfg.data.name, "test", cfg.data.scenes_test,
                                scenes.spec_for_size(cfg.data.scene_size), 0,
                                cfg.data.data_dir or None)  # fmt: skip
    real = y[..., 4] >= 0  # (N, K)
    class_of = torch.zeros(len(y), y.shape[1] + 1, dtype=torch.long)  # instance k -> class + 1
    class_of[:, 1:][real] = predicted + 1
    instances = torch.from_numpy(found.instances.astype(np.int64)).flatten(1)  # (N, S*S)
    painted = class_of.gather(1, instances)
    truth = torch.from_numpy(found.semantic.astype(np.int64)).flatten(1)
    scores = iou_scores(confusion_matrix(painted, truth, len(task.classes) + 1))
    return {k: scores[k] for k in ("miou", "pixel_acc")}


def train_crop_cnn(
    features: torch.Tensor, classes: torch.Tensor, epochs: int = 6
) -> tuple[torch.nn.Module, float]:
    """fashion_cnn's network (3 channels) trained on 3x28x28 crops (flattened in
    ``features``) for ``epochs`` (AdamW, one-cycle, label smoothing 0.1, the precision
    ``auto`` picks); the model in eval mode and the training seconds."""
    import torch.nn.functional as F

    from neuralab.models import create_model
    from neuralab.runs import autocast_dtype

    torch.manual_seed(0)
    features = features.view(-1, 3, 28, 28)
    model = create_model(
        "cnn", in_channels=3, mean=(0.5,) * 3, std=(0.25,) * 3, widths=(16, 32, 64),
        convs_per_stage=2, pool="flatten", dropout=0.2,
    )  # fmt: skip
    batches = (len(features) + 127) // 128
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=epochs * batches)
    dtype = autocast_dtype("auto", torch.device("cpu"))
    start = time.perf_counter()
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(features)).split(128):
            with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = F.cross_entropy(model(features[idx]), classes[idx], label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval(), time.perf_counter() - start


def crop_probs(model: torch.nn.Module, features: torch.Tensor) -> torch.Tensor:
    """The crop classifier's class probabilities for flattened 3x28x28 crops."""
    with torch.no_grad():
        return torch.cat([model(b).softmax(1) for b in features.view(-1, 3, 28, 28).split(512)])


def crop_cnn_reference(
    task, cfg, y: torch.Tensor, x: torch.Tensor, n_scenes: int = 40000, epochs: int = 6
) -> dict:
    """A ceiling for recognition: the true boxes (perfect localisation), each crop classified
    by ``train_crop_cnn`` trained on every true box of the first ``n_scenes`` train scenes,
    resized to 28x28; mAP with the top-3 classes as for the logistic regression, and the
    crops' top-1 accuracy."""
    x_train, y_train = task.load(cfg.data, "train", raw=True)
    features, classes = crops(x_train[:n_scenes], y_train[:n_scenes])
    model, train_s = train_crop_cnn(features, classes, epochs)
    test_features, test_classes = crops(x, y)
    probs = crop_probs(model, test_features)
    boxes = [rows[rows[:, 4] >= 0] for rows in y]
    found = coco_map(y, true_boxes_detections(boxes, probs), task.classes)
    return {
        "true_boxes_crop_cnn": {k: found[k] for k in ("map", "map50")},
        "true_masks_crop_cnn": true_masks_miou(task, cfg, y, probs.argmax(1)),
        "crop_accuracy": float((probs.argmax(1) == test_classes).float().mean()),
        "train_crops": len(features),
        "epochs": epochs,
        "train_s": round(train_s, 1),
    }


def inference_speed(model, x: torch.Tensor, detect: bool) -> float:
    """Images per second at batch 64 (a detector's decoding and NMS included)."""
    run = model.detect if detect else model
    n = min(512, len(x))
    with torch.no_grad():
        run(x[:64])
        start = time.perf_counter()
        for i in range(0, n, 64):
            run(x[i : i + 64])
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the preset")
    parser.add_argument(
        "--preset",
        default="fashion_scenes_seg",
        choices=[
            "fashion_scenes_seg",
            "fashion_scenes_seg_fcn",
            "fashion_scenes_det",
            "fashion_scenes_det_anchor",
        ],
    )
    parser.add_argument("--run", help="a trained run of the preset to measure instead")
    parser.add_argument("--out", default="runs/bench", help="where new runs go")
    parser.add_argument(
        "--crop-cnn",
        action="store_true",
        help="detectors: also a CNN classifying the true boxes' crops (a few minutes more)",
    )
    args = parser.parse_args()

    cfg = config.load(args.preset, args.overrides)
    start = time.perf_counter()
    for split in scenes.SPLITS:
        scenes.load_scene_split(cfg.data, split)
    emit({"what": "scene set ready (generated, or read from the cache)",
          "seconds": time.perf_counter() - start})  # fmt: skip

    cfg, run_dir, results = trained_or_given(args.preset, cfg, args.run, args.out)

    task = build_task(cfg)
    detect = isinstance(task, DetectTask)
    x, y = task.load(cfg.data, "test")
    model = load_model(run_dir)
    measured = task.evaluate(model, x, y, 100)
    keys = ("map", "map50", "map75") if detect else ("miou", "pixel_acc")
    per_class = dict(zip(task.classes, measured["ap" if detect else "iou"], strict=True))
    emit(
        {
            "what": f"{cfg.model.name} on {cfg.data.name}",
            "run": str(run_dir),
            **{f"test/{k}": measured[k] for k in keys},
            "test/per_class": per_class,
            "baseline": detection_baseline(task, cfg, y, x)
            if detect
            else segmentation_baseline(task, y),
            **(
                {"ceiling": crop_cnn_reference(task, cfg, y, x)} if detect and args.crop_cnn else {}
            ),
            "train/wall_s": results.get("train/wall_s"),
            "train/steps": results.get("train/steps"),
            "inference_images_per_s_batch64": inference_speed(model, x, detect),
            "target": (
                "mAP@0.5 >= 0.90, mAP >= 0.60 within 20 minutes; >= 200 images/s"
                if detect
                else "mIoU >= 0.80 within 20 minutes"
            )
            + " (issue 19)",
        }
    )


if __name__ == "__main__":
    main()

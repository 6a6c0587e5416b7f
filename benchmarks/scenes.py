"""fashion-scenes (issue 19): generating the scene set, and semantic segmentation on it.

Prints one JSON object per result (machine included): the time to generate the default scene
set; the U-Net preset's test mIoU and pixel accuracy against the all-background baseline, its
training wall time, and its inference speed. Target (issue 19): mIoU >= 0.80 within 20 minutes
of training on 2 cores.

    python benchmarks/scenes.py                     # the preset as it is
    python benchmarks/scenes.py --run runs/x        # measure a run already trained
    python benchmarks/scenes.py train.epochs=2      # overrides for the preset
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from neuralab import config
from neuralab.data import scenes
from neuralab.tasks.base import confusion_matrix
from neuralab.tasks.segment import SegmentTask, iou_scores
from neuralab.train import fit, load_model, new_run_dir


def machine() -> dict:
    return {
        "cores": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }


def emit(result: dict) -> None:
    print(json.dumps({**result, "machine": machine()}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="key=value overrides of fashion_scenes_seg")
    parser.add_argument("--run", help="a trained fashion_scenes_seg run to measure instead")
    parser.add_argument("--out", default="runs/bench", help="where new runs go")
    args = parser.parse_args()

    cfg = config.load("fashion_scenes_seg", args.overrides)
    start = time.perf_counter()
    for split in scenes.SPLITS:
        scenes.load_scene_split(cfg.data, split)
    emit({"what": "scene set ready (generated, or read from the cache)",
          "seconds": time.perf_counter() - start})  # fmt: skip

    if args.run:
        run_dir = Path(args.run)
        cfg = config.load_run(run_dir)
    else:
        run_dir = new_run_dir(Path(args.out) / f"scenes_seg-{time.strftime('%Y%m%d-%H%M%S')}", cfg)
        fit(cfg, run_dir, progress=False)
    results = json.loads((run_dir / "results.json").read_text())

    x, y = scenes.load_scene_split(cfg.data, "test")
    task = SegmentTask.from_config(cfg)
    model = load_model(run_dir)
    measured = task.evaluate(model, x, y, 100)
    background = iou_scores(confusion_matrix(torch.zeros_like(y), y, task.num_classes))
    with torch.no_grad():
        model(x[:64])
        start = time.perf_counter()
        for i in range(0, 512, 64):
            model(x[i : i + 64])
        images_per_s = 512 / (time.perf_counter() - start)
    emit(
        {
            "what": "U-Net on fashion-scenes (fashion_scenes_seg)",
            "run": str(run_dir),
            "test/miou": measured["miou"],
            "test/pixel_acc": measured["pixel_acc"],
            "baseline_all_background": {
                "miou": background["miou"],
                "pixel_acc": background["pixel_acc"],
            },
            "train/wall_s": results.get("train/wall_s"),
            "train/steps": results.get("train/steps"),
            "inference_images_per_s_batch64": images_per_s,
            "target": "mIoU >= 0.80 within 20 minutes (issue 19)",
        }
    )


if __name__ == "__main__":
    main()

"""moving-fashion (issue 21): Karpathy et al. 2014's fusion comparison on clips.

Trains each preset on the chosen variant and prints one JSON object per run (machine
included): test clip accuracy beside chance, video accuracy (the mean prediction of each
test video's clips, the paper's protocol), parameters, training wall time, training and
inference clips per second. The paper's figures (Sports-1M, video hit@1) stand beside them:
single-frame 59.3%, early fusion 57.7%, late 59.3%, slow 60.9%; the multiresolution net
2–4× faster to train at equal accuracy.

Targets (2 CPU cores): motion variant, slow fusion >= 95% clip accuracy and single-frame
within 2 points of chance (10%), early and late between; appearance variant, single-frame
within 2 points of slow fusion; multiresolution >= 2× the training clips/s of slow fusion
at <= 1 point of accuracy lost; each model within 20 minutes of training.

    python benchmarks/video.py                                   # all eight, motion variant
    python benchmarks/video.py --variant appearance --presets single slow
    python benchmarks/video.py --presets slow train.epochs=2     # overrides of every preset
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vision import emit

from neuralab import config
from neuralab.data import moving
from neuralab.tasks.video import VideoTask, video_scores
from neuralab.train import fit, load_model, new_run_dir

PRESETS = ("single", "early", "late", "slow", "multires", "lstm", "c3d", "transformer")
PAPER_HIT1 = {"single": 0.593, "early": 0.577, "late": 0.593, "slow": 0.609}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="key=value overrides of every preset")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    parser.add_argument("--variant", default="motion", choices=moving.VARIANTS)
    parser.add_argument("--out", default="runs/bench", help="where new runs go")
    args = parser.parse_args()

    for fusion in args.presets:
        preset = f"moving_fashion_{fusion}"
        cfg = config.load(preset, [f"data.variant={args.variant}", *args.overrides])
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = new_run_dir(Path(args.out) / f"{preset}-{args.variant}-{stamp}", cfg)
        summary = fit(cfg, run_dir, progress=False)
        model = load_model(run_dir)
        task = VideoTask(moving.classes(args.variant))
        x, y = moving.load_clip_split(cfg.data, "test")
        start = time.perf_counter()
        result = task.evaluate(model, x, y, cfg.train.eval_batch_size)
        infer_s = time.perf_counter() - start
        videos, labels = moving.load_test_videos(cfg.data)
        video = video_scores(model, videos, labels, cfg.data.frames, cfg.train.eval_batch_size)
        emit(
            {
                "what": f"{preset} on {cfg.data.name} ({args.variant})",
                "run": str(run_dir),
                "test_acc": round(result["acc"], 4),
                "chance": round(1 / task.num_classes, 4),
                "test_clips": len(x),
                "video_acc": round(video["test/video_acc"], 4),
                "video_clip_acc": round(video["test/video_clip_acc"], 4),
                "videos": f"{len(videos)} of {video['test/clips_per_video']} clips",
                "params": model.num_params(),
                "train/wall_s": summary["train/wall_s"],
                "train/steps": summary["train/steps"],
                "train_clips_per_s": round(
                    summary["train/steps"] * cfg.train.batch_size / summary["train/wall_s"], 1
                ),
                "inference_clips_per_s": round(len(x) / infer_s, 1),
                "paper_sports1m_hit1": PAPER_HIT1.get(fusion),
            }
        )


if __name__ == "__main__":
    main()

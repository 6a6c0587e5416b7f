"""``neuralab train``, ``test``, ``predict`` and ``demo``: the five steps of the
craft for any kind of run that learns from labels (``neuralab.tasks``)."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from pathlib import Path
from typing import Any

from neuralab.cli.common import (
    add_data_dir,
    add_json,
    add_run_options,
    add_which,
    print_json,
    resolve_run,
    table,
    top_classes,
)
from neuralab.errors import UserError

ORDER = 1
# what predicts for a run trained on a dataset of each kind, other than image classifiers
PREDICTORS = {
    "labelled-text": ("_texts", "predict_texts"),
    "speech": ("_speech", "predict_speech"),
    "captions": ("_captions", "predict_captions"),
    "scenes": ("_scenes", "predict_scenes"),
    "clips": ("_clips", "predict_clips"),
}


def check_trains_with(cfg, command: str, run: Any = None) -> None:
    """A config (or the run ``run``) of a kind that another command trains is a one-line
    error naming that command."""
    from neuralab.tasks import build_task

    other = build_task(cfg).command
    if other == command:
        return
    if run is not None:
        raise UserError(
            f"{run} is a pretraining run ({cfg.ssl.method}) with no classifier to use; "
            f"measure it with: neuralab linear-probe {run}, or neuralab knn {run}"
        )
    raise UserError(
        f"this config is a {cfg.task if cfg.task != 'auto' else cfg.ssl.method} run, which "
        f"{command} does not do; run it with: {other} CONFIG"
    )


def report_interrupted(summary: dict, run_dir: Path, command: str) -> int:
    """Say how to continue; exit 128 + the signal's number, as the shell does (130 for Ctrl-C,
    143 for SIGTERM)."""
    print(
        f"interrupted at step {summary['train/steps']}; checkpoint saved. "
        f"Continue with: {command} --resume {run_dir}",
        file=sys.stderr,
    )
    return 128 + signal.Signals[summary.get("stop_signal", "SIGINT")].value


def train_and_test(cfg, run_dir: Path, *, resume: bool, progress: bool, as_json: bool) -> int:
    """Train (or resume) ``cfg`` in ``run_dir``, test its best checkpoint, print the results."""
    from neuralab.plots import plot_curves
    from neuralab.tasks import build_task
    from neuralab.train import distributed, fit, test

    summary = fit(cfg, run_dir, resume=resume, progress=progress)
    if not distributed.init().main:  # under torchrun, rank 0 reports and tests
        return 0
    plot_curves(run_dir)
    if summary["status"] == "interrupted":
        return report_interrupted(summary, run_dir, "neuralab train")
    result = test(run_dir, "best")
    if as_json:
        print_json({**summary, **result, "run_dir": str(run_dir)})
        return 0
    print(table(build_task(cfg).describe(run_dir, summary, result), ["result", "value"]))
    if "test/per_class_acc" in result:
        rows = [[c, f"{a:.3f}"] for c, a in result["test/per_class_acc"].items()]
        print()
        print(table(rows, ["class", "test acc"]))
    print(f"\nrun directory: {run_dir}")
    print(f"  checkpoint:  {run_dir / 'checkpoints' / 'best'}")
    print(f"  metrics:     {run_dir / 'metrics.jsonl'}, results.json, tensorboard/, plots/")
    step = next_step(cfg, run_dir)
    if step is not None:
        print(f"  {step[0] + ':':<12} {step[1]}")
    return 0


def next_step(cfg: Any, run_dir: Path) -> tuple[str, str] | None:
    """(what, command) a finished run of ``cfg``'s kind can do next, if anything: the
    Shakespeare prompt only for a model of Shakespeare."""
    from neuralab.tasks import task_name

    shakespeare = cfg.data.name == "tinyshakespeare" and not cfg.data.path
    prompt = " --prompt 'ROMEO:'" if shakespeare else ""
    return {
        "language_model": ("sample", f"neuralab sample {run_dir}{prompt} --tokens 500"),
        "caption": ("predict", f"neuralab predict {run_dir} scene.png --beam 3"),
        "translate": ("translate", f"neuralab translate {run_dir} 'In the beginning...'"),
        "textclass": ("predict", f"neuralab predict {run_dir} --text '...' --top-k 3"),
        "ctc": ("predict", f"neuralab predict {run_dir} utterance.wav"),
    }.get(task_name(cfg))


def cmd_train(args: argparse.Namespace) -> int:
    from neuralab import config as config_lib
    from neuralab.tasks import build_task
    from neuralab.train import distributed, new_run_dir

    world = distributed.init()  # a world of one unless torchrun started this process

    def create(cfg, name: str) -> Path:
        check_trains_with(cfg, "neuralab train")
        build_task(cfg).check(cfg, world.size)  # a run that cannot start leaves no directory
        return Path(distributed.from_main(lambda: new_run_dir(args.run_dir, cfg, name), world))

    cfg, run_dir, resume = resolve_run(
        args,
        load=config_lib.load,
        to_toml=config_lib.to_toml,
        create=create,
        usage="neuralab train CONFIG [key=value ...], e.g. fashion_cnn",
        write=world.main,
    )
    if not args.json and world.main and not resume:  # a resumed run: its user named it
        print(f"run directory: {run_dir}", file=sys.stderr)
    code = train_and_test(
        cfg, run_dir, resume=resume, progress=not args.no_progress, as_json=args.json
    )
    distributed.finish()  # not after an error: the other ranks are not there to meet it
    return code


def cmd_test(args: argparse.Namespace) -> int:
    from neuralab import config as config_lib
    from neuralab.train import test

    check_trains_with(config_lib.load_run(args.run), "neuralab train", args.run)
    result = test(args.run, args.which, data_dir=args.data_dir)
    if args.json:
        print_json(result)
        return 0
    print(f"{args.run} ({args.which} checkpoint, step {result['test/step']})")
    if "test/bpc" in result:
        print(
            f"test loss {result['test/loss']:.4f} nats/token, {result['test/bpc']:.4f} "
            f"bits/char, perplexity {result['test/ppl']:.2f}, on {result['test/tokens']:,} tokens"
        )
        return 0
    if "test/bleu" in result:
        from neuralab.cli._texts import print_translation_test

        return print_translation_test(result)
    if "test_seen/wer" in result:
        from neuralab.cli._speech import print_speech_test

        return print_speech_test(result)
    if "test/fact_f1" in result:
        from neuralab.cli._captions import print_caption_test

        return print_caption_test(result)
    if "test/map" in result:
        head = f"test mAP@[.5:.95] {result['test/map']:.4f}, mAP@0.5 {result['test/map50']:.4f}"
        return print_scene_test(result, head, result["test/ap"], "AP")
    if "test/miou" in result:
        head = f"test mIoU {result['test/miou']:.4f}, pixel acc {result['test/pixel_acc']:.4f}"
        return print_scene_test(result, head, result["test/iou"], "IoU")
    what = (
        "images" if "test/chance" not in result else f"clips (chance {result['test/chance']:.3f})"
    )
    if "test/macro_f1" in result:
        what = (
            f"texts; macro-F1 {result['test/macro_f1']:.4f} "
            f"(majority class: accuracy {result['test/majority']:.4f})"
        )
    print(
        f"test acc {result['test/acc']:.4f}, loss {result['test/loss']:.4f}, "
        f"{result['test/examples']} {what}"
    )
    if "test/video_acc" in result:
        print(
            f"video acc {result['test/video_acc']:.4f} ({result['test/videos']} videos, the mean "
            f"of {result['test/clips_per_video']} clips each; those clips alone "
            f"{result['test/video_clip_acc']:.4f})"
        )
    print(
        table(
            [[c, f"{a:.3f}"] for c, a in result["test/per_class_acc"].items()],
            ["class", "test acc"],
        )
    )
    print("confusion matrix (rows: true, columns: predicted):")
    for row in result["test/confusion"]:
        print(" ".join(f"{v:5d}" for v in row))
    return 0


def print_scene_test(result: dict, head: str, per_class: dict, what: str) -> int:
    """A detector's mAP or a segmenter's mIoU (``head``) on the test scenes, and each class's
    AP or IoU (``what``)."""
    print(f"{head}, on {result['test/examples']} scenes")
    rows = [[c, "absent" if v is None else f"{v:.3f}"] for c, v in per_class.items()]
    print(table(rows, ["class", f"test {what}"]))
    return 0


def trained_run(args: argparse.Namespace, kinds: tuple[str, ...] = ("image",)):
    """(run_dir, config, best-or-last model in eval mode, dataset spec) of ``args.run``, a
    run of a model of one of ``kinds`` (image classifiers: what ``attack`` takes)."""
    from neuralab import config as config_lib
    from neuralab import data
    from neuralab.models import model_kind
    from neuralab.train import load_model

    run_dir = Path(args.run)
    cfg = config_lib.load_run(run_dir)
    check_trains_with(cfg, "neuralab train", run_dir)
    kind = model_kind(cfg.model.name)
    if kind not in kinds:
        what = " and ".join(
            {
                "image": "image classifiers",
                "segment": "segmenters",
                "detect": "detectors",
                "caption": "captioners",
                "video": "clip classifiers",
                "textclass": "text classifiers",
                "seq2seq": "translators",
            }[k]
            for k in kinds
        )
        raise UserError(
            f"{run_dir} holds a {kind} model ({cfg.model.name}); `neuralab {args.command}` "
            f"takes runs of {what}"
        )
    return run_dir, cfg, load_model(run_dir, args.which), data.DATASETS.get(cfg.data.name)


def cmd_predict(args: argparse.Namespace) -> int:
    import torch

    from neuralab import data
    from neuralab.data.image_files import border_mean, read_image

    run_dir, cfg, model, spec = trained_run(
        args, ("image", "segment", "detect", "caption", "video", "textclass", "speech")
    )
    if not 0 <= args.min_score <= 1:
        raise UserError(f"--min-score must be in [0, 1], got {args.min_score}")
    if args.text and spec.kind != "labelled-text":
        raise UserError(f"--text is for text classification runs; {run_dir} is not one")
    if args.beam is not None and args.beam < 1:
        raise UserError(f"--beam must be >= 1, got {args.beam}")
    if not args.images and spec.kind not in ("labelled-text", "speech"):
        raise UserError("give the image files to predict (or --text for a text classifier)")
    if spec.kind not in ("captions", "speech") and (args.beam or 1, args.temperature) != (1, 0):
        raise UserError(
            f"--beam and --temperature are for caption and speech runs; {run_dir} is not one"
        )
    if spec.kind in PREDICTORS:  # a module of this package: cli/_texts.py, ...
        module, function = PREDICTORS[spec.kind]
        predict = getattr(importlib.import_module(f"neuralab.cli.{module}"), function)
        return predict(args, run_dir, cfg, model)
    x_train, _ = data.load_split(cfg.data, "train")
    dark = border_mean(x_train[:1000]) < 0.5
    if args.top_k < 1:
        raise UserError(f"--top-k must be >= 1, got {args.top_k}")
    out = []
    for path in args.images:
        image, inverted = read_image(
            path, channels=spec.channels, size=(spec.height, spec.width), dark_background=dark
        )
        with torch.no_grad():
            probs = model(image.unsqueeze(0)).softmax(dim=1)[0]
        top = top_classes(probs, spec.classes, args.top_k)
        out.append({"image": str(path), "inverted": inverted, "top": top})
    if args.json:
        print_json({"run": str(run_dir), "predictions": out})
        return 0
    for item in out:
        note = " (inverted: light background)" if item["inverted"] else ""
        guesses = ", ".join(f"{p['class']} {p['prob']:.1%}" for p in item["top"])
        print(f"{item['image']}{note}: {guesses}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from neuralab import config as config_lib
    from neuralab.train import new_run_dir

    cfg = config_lib.load("digits_cnn", args.overrides)
    run_dir = new_run_dir(args.run_dir, cfg, name="demo_digits_cnn")
    print("neuralab demo: a small CNN on scikit-learn's 8x8 digits (1,797 images, no download)")
    print(f"run directory: {run_dir}\n", flush=True)
    return train_and_test(cfg, run_dir, resume=False, progress=not args.no_progress, as_json=False)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train, validate every epoch, test the best checkpoint")
    add_run_options(p, "fashion_cnn, digits_cnn, shakespeare_gpt, ...")
    add_data_dir(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("test", help="re-test a run's checkpoint on the test split")
    p.add_argument("run")
    add_which(p)
    p.add_argument("--data-dir", help="read the test split from here")
    add_json(p)
    p.set_defaults(func=cmd_test)

    p = sub.add_parser(
        "predict",
        help="top-k classes (a segmenter's masks, a detector's boxes, a captioner's caption) "
        "for image files, clips or texts",
    )
    p.add_argument("run", help="a trained run directory")
    p.add_argument(
        "images", nargs="*", help="image files (PNG, JPEG, ...); video runs: clips (.npy, GIF)"
    )
    p.add_argument(
        "--text", action="append", help="text classifiers: a text to classify (repeatable)"
    )
    p.add_argument("--top-k", type=int, default=3, help="classes shown per image (default: 3)")
    p.add_argument(
        "--min-score",
        type=float,
        default=0.3,
        help="detectors: the lowest score of a box drawn and listed (default: 0.3)",
    )
    p.add_argument(
        "--out",
        help="segmenters and detectors: the PNG to draw (a folder for several images; "
        "default: IMAGE_mask.png or IMAGE_boxes.png)",
    )
    p.add_argument(
        "--beam", type=int, help="captioners: beam size (default 1: greedy); speech: (default 8)"
    )
    p.add_argument(
        "--temperature", type=float, default=0.0, help="captioners: sample at this temperature"
    )
    p.add_argument("--seed", type=int, default=0, help="captioners: the sampling seed")
    add_which(p)
    add_json(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("demo", help="train and test a small CNN on the bundled digits")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. train.epochs=5")
    p.add_argument("--run-dir", help="where to write the run (default: runs/demo_digits_cnn-TIME)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)

"""``neuralab data list|info|fetch`` and ``neuralab models list``."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from neuralab.cli.common import Parser, add_json, print_json, table
from neuralab.errors import UserError

ORDER = 0


def cmd_data_list(args: argparse.Namespace) -> int:
    from neuralab import data

    rows = []
    for name in data.DATASETS.names():
        try:
            where = str(data.locate(name, args.data_dir))
        except UserError:
            where = None
        spec = data.DATASETS.get(name)
        rows.append(
            {
                "name": name,
                "present": where is not None,
                "where": where,
                "kind": spec.kind,
                "classes": spec.num_classes,
                "shape": [spec.channels, spec.height, spec.width],
                "how_to_get": spec.how_to_get,
            }
        )
    if args.json:
        print_json({"datasets": rows})
        return 0
    lines = [
        [
            r["name"],
            r["kind"]
            if "text" in r["kind"] or r["kind"] == "speech"
            else "x".join(map(str, r["shape"])),
            r["classes"] or "-",
            r["where"] or f"missing: {r['how_to_get']}",
        ]
        for r in rows
    ]
    print(table(lines, ["dataset", "shape", "classes", "found at"]))
    return 0


def _check_counts(train: int, test: int) -> None:
    if train < 1 or test < 1:
        raise UserError(f"--train and --test must be >= 1, got {train} and {test}")


def _scene_spec(args: argparse.Namespace):
    """The scenes module and the spec the options ask for, after checking them."""
    from neuralab.data import DATASETS, scenes

    if DATASETS.get(args.name).kind != "scenes":
        names = ", ".join(scenes.SOURCES)
        raise UserError(f"{args.name!r} is not a scene set; scene sets: {names}")
    _sizes(args)  # checks the counts
    spec = scenes.spec_for_size(args.size or 96, args.max_iou)
    return scenes, spec.check()


def split_sizes(train: int | None, test: int | None) -> dict[str, int]:
    """Scenes per split, as a run with ``data.scenes_train`` = ``train`` and
    ``data.scenes_test`` = ``test`` draws them (the config's defaults where None), val taking
    the default ``data.val_fraction`` of ``train``."""
    from neuralab.config import DataConfig
    from neuralab.data.splits import generated_size

    defaults = DataConfig()
    total = defaults.scenes_train if train is None else train
    test = defaults.scenes_test if test is None else test
    _check_counts(total, test)
    fraction = defaults.val_fraction
    return {s: generated_size(s, total, test, fraction) for s in ("train", "val", "test")}


def _sizes(args: argparse.Namespace) -> dict[str, int]:
    """``split_sizes`` of the --train and --test options."""
    return split_sizes(args.train, args.test)


def _caption_config(name: str, size: int, train: int, test: int, data_dir: str | None):
    """The data config of a captioned scene set."""
    from neuralab.config import DataConfig

    _check_counts(train, test)
    return DataConfig(
        name=name, scene_size=size, scenes_train=train, scenes_test=test, data_dir=data_dir or ""
    )


def _caption_info(args: argparse.Namespace) -> dict:
    """Scenes, objects per class and caption lengths of each split, the scenes holding a
    held-out combination, and the training vocabulary, at the captioning presets' sizes."""
    from neuralab.data import DATASETS, captions

    cfg = _caption_config(args.name, 64, 20000, 1000, args.data_dir)
    classes = DATASETS.get(args.name).classes
    info = {"name": args.name, "kind": "captions", "size": cfg.scene_size, "splits": {}}
    for split in captions.SPLITS:
        found = captions.load_split(cfg, split)
        labels = [t.cls for scene in found.things for t in scene]
        words = [len(c.split()) for refs in found.references for c in refs]
        info["splits"][split] = {
            "scenes": len(found.things),
            "objects_per_class": {c: labels.count(i) for i, c in enumerate(classes)},
            "scenes_with_held_out_combinations": sum(map(captions.is_novel, found.things)),
            "caption_words": {"mean": round(sum(words) / len(words), 2), "max": max(words)},
        }
        if split == "train":
            info["vocabulary"] = len(captions.Vocabulary.build(found.references))
    return info


def _show_captions(args: argparse.Namespace) -> int:
    from pathlib import Path

    from neuralab.data import captions
    from neuralab.plots import plot_captioned_scenes

    if not 1 <= args.n <= 64:
        raise UserError(f"--n must be in [1, 64], got {args.n}")
    train = 20000 if args.train is None else args.train
    test = 1000 if args.test is None else args.test
    cfg = _caption_config(args.name, args.size or 64, train, test, args.data_dir)
    found = captions.load_split(cfg, args.split)
    n = min(args.n, len(found.things))
    out = plot_captioned_scenes(found.images[:n], found.references[:n], Path(args.out))
    print(f"wrote {out}: {n} {args.split} scenes, each with its {captions.REFERENCES} references")
    return 0


def _scene_info(args: argparse.Namespace) -> dict:
    from neuralab.data import DATASETS, scene_export, scenes

    spec = asdict(scenes.DEFAULT_SPEC)  # the spec scene_set draws with by default
    info = {"name": args.name, "kind": "scenes", "spec": spec, "splits": {}}
    classes = DATASETS.get(args.name).classes
    for split, n in split_sizes(None, None).items():
        found, path = scenes.scene_set(args.name, split, n, data_dir=args.data_dir)
        info["splits"][split] = {"path": str(path), **scene_export.summary(found, classes)}
    return info


def cmd_data_info(args: argparse.Namespace) -> int:
    from neuralab import data

    kind = data.DATASETS.get(args.name).kind
    if kind == "scenes":
        info = _scene_info(args)
    elif kind == "captions":
        info = _caption_info(args)
    elif kind == "clips":
        from neuralab.cli._clips import clip_info

        info = clip_info(args)
    elif kind == "speech":
        from neuralab.cli._speech import speech_info

        info = speech_info(args)
    elif kind == "labelled-text":
        from neuralab.cli._texts import text_info

        info = text_info(args)
    elif kind == "parallel-text":
        from neuralab.cli._texts import pairs_info

        info = pairs_info(args)
    else:
        info = data.info(args.name, args.data_dir)
    if args.json:
        print_json(info)
    else:
        for key, value in info.items():
            print(f"{key:>14}: {value}")
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from neuralab import data

    if data.DATASETS.get(args.name).kind in ("scenes", "captions", "clips", "speech"):
        raise UserError(f"{args.name} is generated, not downloaded: neuralab data make {args.name}")
    path = data.fetch(args.name, args.data_dir)
    print(f"{args.name} is in {path}")
    return 0


def cmd_data_make(args: argparse.Namespace) -> int:
    import time

    from neuralab.data import DATASETS

    if DATASETS.get(args.name).kind == "speech":
        from neuralab.cli._speech import make_speech

        return make_speech(args)
    scenes, spec = _scene_spec(args)
    for split, n in _sizes(args).items():
        start = time.perf_counter()
        found, path = scenes.scene_set(args.name, split, n, spec, args.seed, args.data_dir)
        seconds = time.perf_counter() - start
        objects = len(found.labels)
        print(f"{split}: {len(found)} scenes, {objects} objects, in {path} ({seconds:.1f} s)")
    return 0


def cmd_data_show(args: argparse.Namespace) -> int:
    from pathlib import Path

    from neuralab.data import DATASETS
    from neuralab.plots import plot_scene_grid

    if DATASETS.get(args.name).kind == "captions":
        return _show_captions(args)
    if DATASETS.get(args.name).kind == "clips":
        from neuralab.cli._clips import show_clips

        return show_clips(args)
    if DATASETS.get(args.name).kind == "speech":
        from neuralab.cli._speech import show_speech

        return show_speech(args)
    if args.split == "test_seen":
        raise UserError("only a speech set has a test_seen split")
    if args.split == "test_comp":
        raise UserError("only a captioned scene set has a test_comp split")
    scenes, spec = _scene_spec(args)
    if not 1 <= args.n <= 64:
        raise UserError(f"--n must be in [1, 64], got {args.n}")
    n = _sizes(args)[args.split]
    found, _ = scenes.scene_set(args.name, args.split, n, spec, args.seed, args.data_dir)
    picked = range(min(args.n, len(found)))
    out = plot_scene_grid(
        found.images[: len(picked)],
        [found.boxes[found.objects(i)] for i in picked],
        [found.labels[found.objects(i)] for i in picked],
        found.semantic[: len(picked)],
        DATASETS.get(args.name).classes,
        Path(args.out),
    )
    print(f"wrote {out}: {len(picked)} {args.split} scenes, boxes above, semantic masks below")
    return 0


def cmd_data_export(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from matplotlib.image import imsave

    from neuralab.data import DATASETS, scene_export

    scenes, spec = _scene_spec(args)
    out = Path(args.coco).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and is not an empty directory; pick a new one")
    classes = DATASETS.get(args.name).classes
    for split, n in _sizes(args).items():
        found, _ = scenes.scene_set(args.name, split, n, spec, args.seed, args.data_dir)
        (out / split).mkdir(parents=True)
        names = [f"{split}/{i:06d}.png" for i in range(len(found))]
        for name, image in zip(names, found.images, strict=True):
            imsave(out / name, image.transpose(1, 2, 0))
        coco = scene_export.coco_dict(found, classes, names)
        (out / f"{split}.json").write_text(json.dumps(coco))
        print(f"{split}: {len(names)} images and {len(coco['annotations'])} objects in {out}")
    return 0


def _add_scene_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "name",
        help="a scene set: fashion-scenes, mnist-scenes (show: also fashion-scenes-captions, "
        "moving-fashion, spoken-digits, spoken-commands)",
    )
    p.add_argument(
        "--size", type=int, help="canvas side in pixels (default: 96; captioned scenes: 64)"
    )
    p.add_argument("--max-iou", type=float, default=0.3, help="most overlap of two boxes")
    p.add_argument("--seed", type=int, default=0, help="same seed, same scenes (default: 0)")
    p.add_argument(
        "--train",
        type=int,
        help="train and val scenes (default: 20000, a tenth for val), clips (default: 8000) "
        "or utterances (6000)",
    )
    p.add_argument(
        "--test",
        type=int,
        help="test scenes (default: 2000), clips (default: 2000) or utterances (600; val too)",
    )
    p.add_argument(
        "--variant",
        choices=["motion", "appearance", "mixed"],
        default="motion",
        help="moving-fashion: what labels a clip (default: motion)",
    )
    p.add_argument("--data-dir", help="cache the scenes here (default: the user cache)")


def cmd_models_list(args: argparse.Namespace) -> int:
    from neuralab.models import create_model, list_models, model_kind

    names = list_models(args.pattern)
    if not names:
        raise UserError(f"no model matches {args.pattern!r}; try: neuralab models list")
    rows = [
        {"name": n, "kind": model_kind(n), "params": create_model(n).num_params()} for n in names
    ]
    if args.json:
        inputs = {
            "image": "1x28x28, 10 classes",
            "text": "65-character vocabulary",
            "speech": "40 mels, 10 labels and the blank",
        }
        print_json({"inputs": inputs, "models": rows})
    else:
        lines = [[r["name"], r["kind"], f"{r['params']:,}"] for r in rows]
        print(table(lines, ["model", "kind", "params"]))
        print(
            "params at the defaults: images 1x28x28 with 10 classes; text with 65 characters; "
            "speech with 40 mels and 10 labels"
        )
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    data_p = sub.add_parser(
        "data", help="datasets: list, info, fetch; scene sets: make, show, export"
    )
    data_sub = data_p.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    p = data_sub.add_parser("list", help="registered datasets and where they are")
    add_json(p)
    p.add_argument("--data-dir", help="look here first (default: $NEURALAB_DATA)")
    p.set_defaults(func=cmd_data_list)
    p = data_sub.add_parser("info", help="sizes, classes, location, train mean/std")
    p.add_argument("name")
    add_json(p)
    p.add_argument("--data-dir", help="look here first (default: $NEURALAB_DATA)")
    p.add_argument(
        "--variant",
        choices=["motion", "appearance", "mixed"],
        default="motion",
        help="moving-fashion: what labels a clip (default: motion)",
    )
    p.add_argument("--size", type=int, help="moving-fashion: frame side (default: 64)")
    p.add_argument(
        "--train", type=int, help="train clips (default: 8000) or utterances (default: 6000)"
    )
    p.add_argument(
        "--test", type=int, help="test clips (default: 2000) or utterances (default: 600; val too)"
    )
    p.set_defaults(func=cmd_data_info)
    p = data_sub.add_parser("fetch", help="download from the canonical source, check sha256")
    p.add_argument("name")
    p.add_argument("--data-dir", help="download here instead of the user cache")
    p.set_defaults(func=cmd_data_fetch)
    p = data_sub.add_parser(
        "make", help="generate a scene set's train, val and test splits (a speech set's four)"
    )
    _add_scene_options(p)
    p.set_defaults(func=cmd_data_make)
    p = data_sub.add_parser(
        "show", help="a PNG grid of scenes with boxes and masks drawn (or with their captions)"
    )
    _add_scene_options(p)
    p.add_argument("--n", type=int, default=16, help="scenes (or clips) to draw (default: 16)")
    p.add_argument(
        "--split",
        choices=["train", "val", "test", "test_comp", "test_seen"],
        default="test",
        help="test_comp: a captioned set's compositional test split; test_seen: a speech set's",
    )
    p.add_argument("--out", default="scenes.png", help="the PNG (default: scenes.png)")
    p.set_defaults(func=cmd_data_show)
    p = data_sub.add_parser("export", help="a scene set as PNG files and COCO JSON")
    _add_scene_options(p)
    p.add_argument("--coco", required=True, metavar="DIR", help="a new or empty directory")
    p.set_defaults(func=cmd_data_export)

    models_p = sub.add_parser("models", help="registered models")
    models_sub = models_p.add_subparsers(dest="models_command", required=True, parser_class=Parser)
    p = models_sub.add_parser("list", help="models matching a wildcard, with parameter counts")
    p.add_argument("pattern", nargs="?", default="*", help="e.g. 'resnet*' (default: all)")
    add_json(p)
    p.set_defaults(func=cmd_models_list)

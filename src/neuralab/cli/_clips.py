"""The CLI's clip commands (issue 21): ``data info|show moving-fashion`` and ``predict`` of a
video run, which reads a clip from a ``.npy`` array or an animated GIF."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from neuralab.cli.common import print_json, top_classes
from neuralab.errors import UserError


def clip_config(args: argparse.Namespace) -> Any:
    """The data config of the clip set the options ask for (the presets' sizes by default)."""
    from neuralab.config import DataConfig
    from neuralab.data import moving

    defaults = DataConfig()
    train = defaults.clips_train if args.train is None else args.train
    test = defaults.clips_test if args.test is None else args.test
    if train < 1 or test < 1:
        raise UserError(f"--train and --test must be >= 1, got {train} and {test}")
    moving.check_variant(args.variant)
    return DataConfig(
        name=moving.NAME,
        variant=args.variant,
        clip_size=args.size or defaults.clip_size,
        clips_train=train,
        clips_test=test,
        data_dir=args.data_dir or "",
    )


def clip_info(args: argparse.Namespace) -> dict:
    """Clips per split and per class, items per clip, frames, size, chance."""
    import numpy as np

    from neuralab.data import moving
    from neuralab.data.splits import generated_size

    cfg = clip_config(args)
    classes = moving.classes(cfg.variant)
    info = {"name": cfg.name, "kind": "clips", "variant": cfg.variant, "splits": {}}
    info |= {"frames": cfg.frames, "size": cfg.clip_size, "chance": round(1 / len(classes), 4)}
    for split in moving.SPLITS:
        n = generated_size(split, cfg.clips_train, cfg.clips_test, cfg.val_fraction)
        found, path = moving.clip_set(
            split, n, cfg.variant, cfg.frames, cfg.clip_size, 0, args.data_dir
        )
        counts = np.bincount(found.labels, minlength=len(classes))
        items = (found.sources >= 0).sum(1)
        info["splits"][split] = {
            "path": str(path),
            "clips": len(found),
            "clips_per_class": dict(zip(classes, counts.tolist(), strict=True)),
            "items_per_clip": {
                str(k): int((items == k).sum()) for k in range(1, moving.MAX_ITEMS + 1)
            },
        }
    return info


def show_clips(args: argparse.Namespace) -> int:
    """A PNG, one row per clip (every other frame) titled by its class; or, to a ``.gif``,
    the clips playing side by side, their classes printed in reading order."""
    from neuralab.data import moving
    from neuralab.data.splits import generated_size
    from neuralab.plots import plot_clip_strips, save_clip_gif

    if not 1 <= args.n <= 64:
        raise UserError(f"--n must be in [1, 64], got {args.n}")
    if args.split not in moving.SPLITS:
        raise UserError(f"clip sets have the splits {', '.join(moving.SPLITS)}, not {args.split!r}")
    cfg = clip_config(args)
    n = generated_size(args.split, cfg.clips_train, cfg.clips_test, cfg.val_fraction)
    found, _ = moving.clip_set(
        args.split, n, cfg.variant, cfg.frames, cfg.clip_size, 0, args.data_dir
    )
    classes = moving.classes(cfg.variant)
    picked = min(args.n, len(found))
    titles = [classes[int(c)] for c in found.labels[:picked]]
    if Path(args.out).suffix.lower() == ".gif":
        out = save_clip_gif(found.clips[:picked], Path(args.out))
        print(f"wrote {out}: {picked} {args.split} clips ({cfg.variant}), 4 to a row:")
        print(", ".join(titles))
        return 0
    out = plot_clip_strips(found.clips[:picked], titles, Path(args.out))
    print(f"wrote {out}: {picked} {args.split} clips ({cfg.variant}), every other frame")
    return 0


def read_clip(path: str, frames: int, size: int) -> Any:
    """A clip file as (1, T, 1, S, S) float in [0, 1]: a ``.npy`` array (T, S, S) or (T, 1,
    S, S) of uint8 (or float in [0, 1]), or an animated GIF (made grey); it must have the
    run's frames and size, or it is a one-line error (a clip is never resampled in time)."""
    import numpy as np
    import torch

    file = Path(path)
    if not file.is_file():
        raise UserError(f"no such clip file: {path}")
    if file.suffix == ".npy":
        try:
            array = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise UserError(f"{path} is not a .npy array ({err})") from None
    else:
        from PIL import Image, ImageSequence, UnidentifiedImageError

        try:
            with Image.open(file) as image:
                array = np.stack(
                    [np.asarray(f.convert("L")) for f in ImageSequence.Iterator(image)]
                )
        except (OSError, UnidentifiedImageError) as err:
            raise UserError(f"{path} is not a clip (.npy or an animated GIF): {err}") from None
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3 or array.shape != (frames, size, size):
        raise UserError(
            f"{path} holds a clip of shape {array.shape}; this run takes {frames} frames of "
            f"{size}x{size} (T, S, S)"
        )
    x = torch.from_numpy(np.ascontiguousarray(array))
    x = x.float().div(255) if x.dtype == torch.uint8 else x.float()
    if x.min() < 0 or x.max() > 1:
        raise UserError(f"{path}: a float clip must lie in [0, 1]")
    return x[None, :, None]


def predict_clips(args: argparse.Namespace, run_dir: Path, cfg: Any, model: Any) -> int:
    """The top classes of each clip file."""
    import torch

    from neuralab.data import moving

    classes = moving.classes(cfg.data.variant)
    if args.top_k < 1:
        raise UserError(f"--top-k must be >= 1, got {args.top_k}")
    out = []
    for path in args.images:
        x = read_clip(path, cfg.data.frames, cfg.data.clip_size)
        with torch.no_grad():
            probs = model(x).softmax(dim=1)[0]
        out.append({"clip": str(path), "top": top_classes(probs, classes, args.top_k)})
    if args.json:
        print_json({"run": str(run_dir), "predictions": out})
        return 0
    for item in out:
        print(f"{item['clip']}: " + ", ".join(f"{p['class']} {p['prob']:.1%}" for p in item["top"]))
    return 0

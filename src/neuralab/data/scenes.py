"""Scenes: canvases of several real Fashion-MNIST items, for detection and segmentation.

No detection or segmentation dataset installs on these machines, so ``fashion-scenes`` is
generated from real images: each scene is a square canvas with 1–6 Fashion-MNIST items,
taken from the matching split (test scenes use only test images, val scenes only the
source's held-out val images, train scenes the rest), each scaled to 16–56 px
and tinted, placed so that no two boxes overlap by more than an IoU of 0.3, over a cluttered
background (a colour gradient, pixel noise, and faded fragments of other items that are not
objects). Items are painted largest first, so a smaller one may hide part of a larger one,
never the reverse.

Annotations, per object: its box (xyxy pixels, x1 and y1 exclusive, tight around the item's
pixels of alpha > ``ALPHA_ON``, hidden ones included), class, tint, the index of its source
image in the split; per image: an instance map (0 background, k the image's k-th
object, visible pixels only) and a semantic map (0 background, class + 1). The same
``SceneSpec``, seed and source images give bit-identical scenes; a generated split is cached
under a hash of all of them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from neuralab.errors import UserError
from neuralab.runs import replaced_atomically

if TYPE_CHECKING:
    from neuralab.config import DataConfig

GENERATOR_VERSION = 1  # bump when the same spec and seed would draw different scenes
ALPHA_ON = 0.1  # an item's pixel belongs to it where its (scaled) intensity exceeds this
SOURCE_SIDE = 28
FIELDS = ("images", "instances", "semantic", "counts", "boxes", "labels", "tints", "sources")


@dataclass(frozen=True)
class SceneSpec:
    """How scenes are drawn; ``check`` names the first value out of range."""

    size: int = 96
    min_objects: int = 1
    max_objects: int = 6
    min_side: int = 16
    max_side: int = 56
    max_iou: float = 0.3
    clutter: int = 3  # faded fragments of other items in the background, per scene

    def check(self) -> SceneSpec:
        rules = [
            (32 <= self.size <= 256, f"size must be in [32, 256], got {self.size}"),
            (
                1 <= self.min_objects <= self.max_objects <= 12,
                f"objects per scene must satisfy 1 <= min <= max <= 12, got "
                f"{self.min_objects}..{self.max_objects}",
            ),
            (
                8 <= self.min_side <= self.max_side <= self.size,
                f"item sides must satisfy 8 <= min <= max <= size ({self.size}), got "
                f"{self.min_side}..{self.max_side}",
            ),
            (0 <= self.max_iou <= 1, f"max_iou must be in [0, 1], got {self.max_iou}"),
            (0 <= self.clutter <= 20, f"clutter must be in [0, 20], got {self.clutter}"),
        ]
        for ok, message in rules:
            if not ok:
                raise UserError(message)
        return self


@dataclass(frozen=True)
class SceneRules:
    """What a captioned scene set adds to a ``SceneSpec``: tints from a named ``palette`` and
    sides from separated bands (so colour and size words are facts of the picture), and
    combinations that never occur (so a test split can hold ones training never saw)."""

    palette: tuple[tuple[int, int, int], ...]
    sides: tuple[tuple[int, int], ...]  # (smallest, largest) item side of each band
    forbidden_tints: frozenset[tuple[int, int]] = frozenset()  # (class, palette index)
    forbidden_pairs: frozenset[tuple[int, int]] = frozenset()  # (class, class), smaller first


class Scenes(NamedTuple):
    """N scenes and their M objects; object arrays are in image order (``counts`` each)."""

    images: np.ndarray  # (N, 3, S, S) uint8
    instances: np.ndarray  # (N, S, S) uint8: 0 background, k = the image's k-th object
    semantic: np.ndarray  # (N, S, S) uint8: 0 background, class + 1
    counts: np.ndarray  # (N,) int64: objects per image
    boxes: np.ndarray  # (M, 4) int64: x0, y0, x1, y1 pixels, x1 and y1 exclusive
    labels: np.ndarray  # (M,) int64: class ids
    tints: np.ndarray  # (M, 3) uint8: the item's colour
    sources: np.ndarray  # (M,) int64: index of the item's image in its source split

    def __len__(self) -> int:
        return len(self.images)

    def objects(self, i: int) -> slice:
        """Where image ``i``'s objects lie in the object arrays."""
        start = int(self.counts[:i].sum())
        return slice(start, start + int(self.counts[i]))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of xyxy boxes (x1, y1 exclusive)."""
    a, b = a[:, None, :].astype(np.float64), b[None, :, :].astype(np.float64)
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area + area_b - inter, 1e-12)


def _scaled(item: np.ndarray, side: int) -> np.ndarray:
    """A (28, 28) uint8 item as (side, side) alpha in [0, 1] (bilinear, antialiased)."""
    x = torch.from_numpy(item).float().div(255)[None, None]
    return F.interpolate(x, size=(side, side), mode="bilinear", antialias=True)[0, 0].numpy()


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(3, S, S) float in [0, 1]: a linear gradient between two colours, plus pixel noise."""
    c0, c1 = rng.uniform(0.0, 0.6, 3), rng.uniform(0.0, 0.6, 3)
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:size, 0:size] / (size - 1)
    t = xs * np.cos(angle) + ys * np.sin(angle)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
    canvas = c0[:, None, None] * (1 - t) + c1[:, None, None] * t
    return canvas + rng.normal(0, 0.03, (3, size, size))


def _paint(canvas: np.ndarray, alpha: np.ndarray, tint: np.ndarray, y: int, x: int) -> None:
    h, w = alpha.shape
    region = canvas[:, y : y + h, x : x + w]
    region *= 1 - alpha
    region += alpha * tint[:, None, None]


def _clutter(rng, canvas, source: np.ndarray, spec: SceneSpec) -> None:
    """Faded fragments (a corner of another item) that are part of the background."""
    for _ in range(spec.clutter):
        item = source[rng.integers(len(source))]
        side = int(rng.integers(10, 19))
        top, left = rng.integers(0, SOURCE_SIDE - side + 1, 2)
        fragment = _scaled(np.ascontiguousarray(item[top : top + side, left : left + side]), side)
        y, x = rng.integers(0, spec.size - side + 1, 2)
        _paint(canvas, 0.4 * fragment, rng.uniform(0.2, 1.0, 3), int(y), int(x))


def _sides(rng, spec: SceneSpec, rules: SceneRules | None, n: int) -> np.ndarray:
    """The sides of a scene's ``n`` items, largest first."""
    if rules is None:
        return np.sort(rng.integers(spec.min_side, spec.max_side + 1, n))[::-1]
    bands = np.array(rules.sides)[rng.integers(len(rules.sides), size=n)]
    return np.sort(rng.integers(bands[:, 0], bands[:, 1] + 1))[::-1]


def _item(rng, source_y, rules: SceneRules | None, labels: list[int]) -> int | None:
    """The next item's source index: under ``rules``, of a class in no forbidden pair with the
    scene's (None when 20 draws all were)."""
    for _ in range(20):
        index = int(rng.integers(len(source_y)))
        c = int(source_y[index])
        if rules is None or all(
            (min(c, o), max(c, o)) not in rules.forbidden_pairs for o in labels
        ):
            return index
    return None


def _tint(rng, rules: SceneRules | None, c: int) -> np.ndarray:
    """An item's colour in [0, 1]: random, or a palette colour ``rules`` allow for class c."""
    if rules is None:
        return rng.uniform(0.35, 1.0, 3)
    allowed = [t for t in range(len(rules.palette)) if (c, t) not in rules.forbidden_tints]
    return np.array(rules.palette[allowed[int(rng.integers(len(allowed)))]]) / 255


def _scene(rng, source_x, source_y, spec: SceneSpec, rules: SceneRules | None = None):
    size = spec.size
    canvas = _background(rng, size)
    _clutter(rng, canvas, source_x, spec)
    instances = np.zeros((size, size), np.uint8)
    n = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    sides = _sides(rng, spec, rules, n)
    boxes, labels, tints, sources = [], [], [], []
    for side in sides:
        index = _item(rng, source_y, rules, labels)
        if index is None:
            continue
        alpha = _scaled(source_x[index], int(side))
        rows, cols = np.nonzero(alpha > ALPHA_ON)
        if len(rows) == 0:
            continue
        tight = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
        for _ in range(20):  # placements tried before the item is left out
            y, x = (int(v) for v in rng.integers(0, size - side + 1, 2))
            box = tight + np.array([x, y, x, y])
            if not boxes or box_iou(box[None], np.array(boxes)).max() <= spec.max_iou:
                break
        else:
            continue
        tint = _tint(rng, rules, int(source_y[index]))
        _paint(canvas, alpha, tint, y, x)
        mask = alpha > ALPHA_ON
        instances[y : y + side, x : x + side][mask] = len(boxes) + 1
        boxes.append(box)
        labels.append(int(source_y[index]))
        tints.append(np.round(tint * 255).astype(np.uint8))
        sources.append(index)
    image = np.round(np.clip(canvas, 0, 1) * 255).astype(np.uint8)
    class_of = np.array([0, *(c + 1 for c in labels)], np.uint8)
    return image, instances, class_of[instances], boxes, labels, tints, sources


def generate(
    source_x: np.ndarray,
    source_y: np.ndarray,
    n: int,
    spec: SceneSpec,
    seed: int | list[int],
    rules: SceneRules | None = None,
) -> Scenes:
    """``n`` scenes of the (K, 28, 28) uint8 items ``source_x`` with classes ``source_y``,
    drawn by numpy's PCG64 from ``seed`` (under ``rules``, when given)."""
    spec.check()
    if n < 1:
        raise UserError(f"a scene set needs at least one scene, got {n}")
    if source_x.ndim != 3 or source_x.shape[1:] != (SOURCE_SIDE, SOURCE_SIDE):
        raise UserError(f"scene items must be (K, 28, 28) images, got {source_x.shape}")
    rng = np.random.Generator(np.random.PCG64(seed))
    parts = [_scene(rng, source_x, source_y, spec, rules) for _ in range(n)]

    def cat(i: int, shape: tuple[int, ...], dtype) -> np.ndarray:
        rows = [np.asarray(r, dtype) for p in parts for r in p[i]]
        return np.stack(rows) if rows else np.zeros((0, *shape), dtype)

    return Scenes(
        images=np.stack([p[0] for p in parts]),
        instances=np.stack([p[1] for p in parts]),
        semantic=np.stack([p[2] for p in parts]),
        counts=np.array([len(p[4]) for p in parts], np.int64),
        boxes=cat(3, (4,), np.int64),
        labels=cat(4, (), np.int64),
        tints=cat(5, (3,), np.uint8),
        sources=cat(6, (), np.int64),
    )


def save(arrays: NamedTuple, path: Path, compress: bool = True) -> None:
    """Arrays (a named tuple) written to a temporary name and renamed: whole or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(path) as tmp, open(tmp, "wb") as f:
        (np.savez_compressed if compress else np.savez)(f, **arrays._asdict())


def load_file(path: Path, kind: type = Scenes, what: str = "scene set") -> Any:
    """A saved ``kind`` (a named tuple of arrays); arrays only, never a pickle."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return kind(**{k: f[k] for k in kind._fields})
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"{path} is not a {what} ({type(err).__name__}: {err})") from None


def cache_key(
    spec: SceneSpec,
    seed: int | list[int],
    n: int,
    source_x: np.ndarray,
    source_y: np.ndarray,
    rules: SceneRules | None = None,
) -> str:
    """A hash of what a scene set depends on: generator, spec, rules, seed, size, sources."""
    h = hashlib.sha256()
    settings = {"version": GENERATOR_VERSION, "spec": asdict(spec), "seed": seed, "n": n}
    if rules is not None:
        sets = {
            k: sorted(map(list, v)) for k, v in asdict(rules).items() if isinstance(v, frozenset)
        }
        settings["rules"] = {**asdict(rules), **sets}
    h.update(json.dumps(settings, sort_keys=True).encode())
    h.update(np.ascontiguousarray(source_x).tobytes())
    h.update(np.ascontiguousarray(source_y).astype(np.int64).tobytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- the registry

SOURCES = {"fashion-scenes": "fashion-mnist", "mnist-scenes": "mnist"}
DEFAULT_SPEC = SceneSpec()
SPLITS = ("train", "val", "test")
SEED_CODES = {"train": 0, "test": 1, "val": 2}  # each split's layouts are its own draw
# Val scenes are drawn from the source's val split at these settings, train scenes from the
# rest of its training images, so a model is validated on items it never saw.
ITEMS_VAL_FRACTION, ITEMS_SPLIT_SEED = 0.1, 0


def source_items(name: str, split: str, data_dir: str | Path | None = None):
    """The (K, 28, 28) uint8 items and (K,) classes that ``split`` of scene set ``name`` is
    drawn from, in file order: the source's official test split for test; for val, its val
    split (``ITEMS_VAL_FRACTION`` of its training images), for train the other ones."""
    from neuralab.data.splits import load

    if name not in SOURCES:
        raise UserError(f"{name!r} is not a scene set; scene sets: {', '.join(SOURCES)}")
    if split not in SPLITS:
        raise UserError(f"scene sets have the splits {', '.join(SPLITS)}, not {split!r}")
    x, y = load(
        SOURCES[name],
        split,
        data_dir=data_dir,
        val_fraction=ITEMS_VAL_FRACTION,
        split_seed=ITEMS_SPLIT_SEED,
    )
    return (x[:, 0] * 255).round().to(torch.uint8).numpy(), y.numpy()


def scene_set(
    name: str,
    split: str,
    n: int,
    spec: SceneSpec = DEFAULT_SPEC,
    seed: int = 0,
    data_dir: str | Path | None = None,
    rules: SceneRules | None = None,
) -> tuple[Scenes, Path]:
    """(scenes, cache file) of ``split``: read from the cache, else generated and cached
    (in ``data_dir``/NAME, else the user cache) under a hash of what it depends on."""
    from neuralab.data.store import cache_root

    source_x, source_y = source_items(name, split, data_dir)
    seeds = [seed, SEED_CODES[split]]
    key = cache_key(spec.check(), seeds, n, source_x, source_y, rules)
    root = Path(data_dir).expanduser() if data_dir is not None else cache_root()
    path = root / name / f"{split}-{n}-{key}.npz"
    if path.exists():
        return load_file(path), path
    scenes = generate(source_x, source_y, n, spec, seeds, rules)
    save(scenes, path)
    return scenes, path


def spec_for_size(size: int, max_iou: float = 0.3) -> SceneSpec:
    """The default spec on a canvas of ``size``: items up to 56 px on 96 px, in proportion."""
    max_side = max(8, round(size * 56 / 96))
    return SceneSpec(size=size, min_side=min(16, max_side), max_side=max_side, max_iou=max_iou)


def _scene_split(cfg: DataConfig, split: str) -> Scenes:
    from neuralab.data.splits import generated_size

    n = generated_size(split, cfg.scenes_train, cfg.scenes_test, cfg.val_fraction)
    return scene_set(cfg.name, split, n, spec_for_size(cfg.scene_size), 0, cfg.data_dir or None)[0]


def _images(found: Scenes, raw: bool) -> torch.Tensor:
    x = torch.from_numpy(found.images)
    return x if raw else x.float().div_(255)


def load_scene_split(
    cfg: DataConfig, split: str, raw: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, S, S) float32 in [0, 1] (``raw``: uint8, a quarter of the memory) and
    semantic masks (N, S, S) int64 of a split of the scene set ``cfg.name``, sized by
    ``splits.generated_size``; a split's scenes hold only its own items (``source_items``)."""
    found = _scene_split(cfg, split)
    return _images(found, raw), torch.from_numpy(found.semantic.astype(np.int64))


def box_targets(scenes: Scenes, max_objects: int) -> torch.Tensor:
    """(N, max_objects, 5) float32 rows ``x0, y0, x1, y1, class`` of each scene's objects,
    padded with rows of -1."""
    out = np.full((len(scenes), max_objects, 5), -1.0, dtype=np.float32)
    image = np.repeat(np.arange(len(scenes)), scenes.counts)
    first = np.cumsum(scenes.counts) - scenes.counts  # each scene's first object
    slot = np.arange(len(image)) - np.repeat(first, scenes.counts)
    out[image, slot, :4] = scenes.boxes
    out[image, slot, 4] = scenes.labels
    return torch.from_numpy(out)


def load_scene_boxes(
    cfg: DataConfig, split: str, raw: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, S, S) as ``load_scene_split`` gives them and box targets (N, K, 5)
    (``box_targets``, K the most objects a scene may hold) of a split."""
    found = _scene_split(cfg, split)
    return _images(found, raw), box_targets(found, spec_for_size(cfg.scene_size).max_objects)

"""``moving-fashion``: clips of real Fashion-MNIST items moving over a still, cluttered
background, for Karpathy et al.'s video comparisons (CVPR 2014), where the motion, not the
look of a frame, decides the class.

Each clip has ``frames`` frames (16 by default) of ``size``×``size`` grey pixels (64). Its
1–2 items (the train clips' from Fashion-MNIST's training images, the val clips' from its
held-out val images, the test clips' from its test images only) move on a torus (an item
leaving one side enters at the other), each by the law of its clip's motion class at its
own speed, about the time ``τ = t − (T − 1)/2`` that is 0 between the two middle frames:

    centre(τ) = centre₀ + v·τ (mod size),  angle(τ) = angle₀ + ω·τ,  side(τ) = side₀·e^(kτ)

The ten motion classes are five pairs of time-reversed twins: left/right, up/down,
clockwise/anticlockwise, grow/shrink, up-right/down-left; a twin negates v, ω and k, so a
clip played backwards is exactly the clip of its twin drawn from the same numbers (tested).
Every class draws the same state at τ = 0 (a uniform position on the torus, a uniform angle,
a log-uniform side) over the same still background, so a single frame near the middle, and
any unordered set of frames, carries no evidence of the motion class: a model must see the
order of the frames.

Variants (``data.variant``): ``motion`` (the label is the motion class), ``appearance``
(one item; the label is its Fashion-MNIST class, the motion drawn at random and irrelevant)
and ``mixed`` (one item; the label is the pair (item class, motion), 100 classes named
"bag/left", so a model needs both what and how). In the last two the item is upright at
τ = 0, as Fashion-MNIST draws it: what it is can be told from the middle frames alone.
The same settings, seed and source images give bit-identical clips, cached under a hash of
all of them.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from neuralab.data.spec import DATASETS
from neuralab.errors import UserError

if TYPE_CHECKING:
    from neuralab.config import DataConfig

NAME = "moving-fashion"
GENERATOR_VERSION = 2  # bump when the same settings and seed would draw different clips
MOTIONS = DATASETS.get(NAME).classes  # five pairs of time-reversed twins
VARIANTS = ("motion", "appearance", "mixed")
SPLITS = ("train", "val", "test")
MAX_ITEMS = 2
_R = 1 / math.sqrt(2)
# per motion class: (v_x, v_y, ω, k) multipliers of the item's drawn speeds; y points down,
# a positive ω turns the item clockwise on the screen
LAWS = torch.tensor(
    [
        [-1, 0, 0, 0],
        [1, 0, 0, 0],
        [0, -1, 0, 0],
        [0, 1, 0, 0],
        [0, 0, 1, 0],
        [0, 0, -1, 0],
        [0, 0, 0, 1],
        [0, 0, 0, -1],
        [_R, -_R, 0, 0],
        [-_R, _R, 0, 0],
    ],
    dtype=torch.float64,
)
SPEED = (1.0, 2.0)  # pixels per frame on a 64-pixel frame, in proportion to the frame
SPIN = (math.radians(8), math.radians(14))  # radians per frame
GROWTH = (math.log(1.8) / 15, math.log(2.4) / 15)  # log side per frame
SIDE = (0.28, 0.42)  # the item's side at τ = 0, as a fraction of the frame (log-uniform)
CLUTTER = 2  # still, faded items in the background


def twin(motion: int) -> int:
    """The motion class that plays ``motion`` backwards."""
    return motion ^ 1


def classes(variant: str) -> tuple[str, ...]:
    """The class names of a variant: the motions, Fashion-MNIST's classes, or each pair of
    them ("item/motion"; class item·10 + motion)."""
    check_variant(variant)
    items = DATASETS.get("fashion-mnist").classes
    if variant == "mixed":
        return tuple(f"{item}/{motion}" for item in items for motion in MOTIONS)
    return MOTIONS if variant == "motion" else items


def check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise UserError(f"data.variant must be one of {', '.join(VARIANTS)}, got {variant!r}")


class Clips(NamedTuple):
    """N clips; each item slot of a clip holds a source image's index or -1."""

    clips: np.ndarray  # (N, T, 1, S, S) uint8
    labels: np.ndarray  # (N,) int64: the variant's class
    motions: np.ndarray  # (N,) int64: the motion class
    items: np.ndarray  # (N, MAX_ITEMS) int64: the items' Fashion-MNIST classes, -1 if none
    sources: np.ndarray  # (N, MAX_ITEMS) int64: the items' indices in the source split, or -1

    def __len__(self) -> int:
        return len(self.clips)


class Items(NamedTuple):
    """M moving (or still) items, float64 tensors; ``clip`` says whose frames they are in."""

    clip: torch.Tensor  # (M,) int64
    source: torch.Tensor  # (M,) int64: index into the source images
    centre: torch.Tensor  # (M, 2) x, y pixels at τ = 0
    angle: torch.Tensor  # (M,) radians at τ = 0
    log_side: torch.Tensor  # (M,) log pixels at τ = 0
    rates: torch.Tensor  # (M, 4): v_x, v_y (pixels per frame), ω, k (per frame)
    opacity: torch.Tensor  # (M,) 1 for a moving item, less for a faded one


def _uniform(gen: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen, dtype=torch.float64)


def draw_items(
    gen: torch.Generator,
    clip: torch.Tensor,
    source: torch.Tensor,
    motion: torch.Tensor,
    size: int,
    upright: bool = False,
) -> Items:
    """Items in ``clip`` moving by their clip's ``motion`` class, at any angle at τ = 0 or
    ``upright``. Every class draws the same numbers in the same order, so a twin's items
    differ only in the signs of their rates."""
    m = len(clip)
    centre = size * torch.rand(m, 2, generator=gen, dtype=torch.float64)
    angle = _uniform(gen, m, 0.0, 2 * math.pi)  # drawn even when upright: the same stream
    if upright:
        angle = torch.zeros_like(angle)
    log_side = _uniform(gen, m, math.log(SIDE[0] * size), math.log(SIDE[1] * size))
    speeds = torch.stack(
        [
            _uniform(gen, m, *SPEED) * size / 64,
            _uniform(gen, m, *SPEED) * size / 64,
            _uniform(gen, m, *SPIN),
            _uniform(gen, m, *GROWTH),
        ],
        1,
    )
    return Items(clip, source, centre, angle, log_side, speeds * LAWS[motion], torch.ones(m))


def render(items: Items, sources: torch.Tensor, canvas: torch.Tensor, frames: int) -> None:
    """Paint ``items`` (in order) of the (K, 28, 28) float ``sources`` on the (N, T, S, S)
    float ``canvas``, in place: each frame samples the item's image where its pose puts it,
    bilinearly, on the torus, with opacity min(1, 4·intensity)·opacity."""
    size = canvas.shape[-1]
    tau = torch.arange(frames, dtype=torch.float64) - (frames - 1) / 2  # (T,)
    m = len(items.clip)
    centre = (items.centre[:, None] + items.rates[:, None, :2] * tau[None, :, None]) % size
    angle = items.angle[:, None] + items.rates[:, None, 2] * tau  # (M, T)
    side = torch.exp(items.log_side[:, None] + items.rates[:, None, 3] * tau)  # (M, T)
    centre, angle, side = centre.float(), angle.float(), side.float()
    pixels = torch.arange(size, dtype=torch.float32) + 0.5
    dx = (pixels[None, None, None, :] - centre[..., 0, None, None] + size / 2) % size - size / 2
    dy = (pixels[None, None, :, None] - centre[..., 1, None, None] + size / 2) % size - size / 2
    cos, sin = torch.cos(angle)[..., None, None], torch.sin(angle)[..., None, None]
    scale = 2 / side[..., None, None]  # half a side -> 1: grid_sample's image edge
    grid = torch.stack(((cos * dx + sin * dy) * scale, (cos * dy - sin * dx) * scale), -1)
    image = sources[items.source][:, None, None].expand(m, frames, 1, 28, 28)
    value = F.grid_sample(
        image.reshape(m * frames, 1, 28, 28),
        grid.reshape(m * frames, size, size, 2),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    ).view(m, frames, size, size)
    alpha = (4 * value).clamp_(max=1) * items.opacity.float()[:, None, None, None]
    for i in range(m):  # items overlap rarely; painting in order keeps it exact and simple
        c = int(items.clip[i])
        canvas[c] = canvas[c] * (1 - alpha[i]) + value[i] * alpha[i]


def _backgrounds(gen: torch.Generator, n: int, size: int) -> torch.Tensor:
    """(N, S, S) float: a grey gradient in a random direction plus still pixel noise."""
    low, high = _uniform(gen, n, 0.0, 0.35), _uniform(gen, n, 0.0, 0.35)
    theta = _uniform(gen, n, 0.0, 2 * math.pi)
    ramp = torch.linspace(-0.5, 0.5, size, dtype=torch.float64)
    along = (
        torch.cos(theta)[:, None, None] * ramp[None, None, :]
        + torch.sin(theta)[:, None, None] * ramp[None, :, None]
    )
    base = low[:, None, None] + (high - low)[:, None, None] * (along + 0.5)
    noise = 0.04 * torch.randn(n, size, size, generator=gen, dtype=torch.float64)
    return (base + noise).float()


def generate(
    source_x: np.ndarray,
    source_y: np.ndarray,
    n: int,
    variant: str = "motion",
    frames: int = 16,
    size: int = 64,
    seed: int | list[int] = 0,
    chunk: int = 128,
) -> Clips:
    """``n`` clips drawn from ``seed`` with the (K, 28, 28) uint8 ``source_x`` items."""
    check_variant(variant)
    sources = torch.from_numpy(source_x).float().div_(255)
    seeds = [seed] if isinstance(seed, int) else seed
    gen = torch.Generator().manual_seed(
        int(hashlib.sha256(str(seeds).encode()).hexdigest(), 16) % 2**63
    )
    k = len(source_x)
    motions = torch.randint(len(MOTIONS), (n,), generator=gen)
    count = (
        torch.randint(1, MAX_ITEMS + 1, (n,), generator=gen)
        if variant == "motion"
        else torch.ones(n, dtype=torch.int64)
    )
    upright = variant != "motion"
    chosen = torch.randint(k, (n, MAX_ITEMS), generator=gen)
    chosen[torch.arange(MAX_ITEMS)[None] >= count[:, None]] = -1
    out = np.empty((n, frames, 1, size, size), dtype=np.uint8)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        canvas = _backgrounds(gen, stop - start, size)[:, None]
        still = torch.arange(stop - start).repeat_interleave(CLUTTER)
        faded = draw_items(
            gen,
            still,
            torch.randint(k, (len(still),), generator=gen),
            torch.zeros(len(still), dtype=torch.int64),
            size,
        )
        faded = faded._replace(
            rates=torch.zeros_like(faded.rates), opacity=torch.full((len(still),), 0.45)
        )
        render(faded, sources, canvas, 1)  # still: painted once, on every frame
        canvas = canvas.repeat(1, frames, 1, 1)
        block = chosen[start:stop]
        clip, slot = (block >= 0).nonzero(as_tuple=True)
        moving = draw_items(gen, clip, block[clip, slot], motions[start:stop][clip], size, upright)
        render(moving, sources, canvas, frames)
        out[start:stop, :, 0] = canvas.clamp_(0, 1).mul_(255).round_().to(torch.uint8).numpy()
    items = np.where(chosen.numpy() >= 0, source_y[chosen.clamp(min=0).numpy()], -1)
    labels = {
        "motion": motions.numpy(),
        "appearance": items[:, 0],
        "mixed": items[:, 0] * len(MOTIONS) + motions.numpy(),
    }[variant]
    return Clips(out, labels.astype(np.int64), motions.numpy(), items, chosen.numpy())


def cache_key(settings: dict, source_x: np.ndarray, source_y: np.ndarray) -> str:
    """A hash of what a clip set depends on: generator, settings, seed, source images."""
    h = hashlib.sha256(
        json.dumps({"version": GENERATOR_VERSION, **settings}, sort_keys=True).encode()
    )
    h.update(np.ascontiguousarray(source_x).tobytes())
    h.update(np.ascontiguousarray(source_y).astype(np.int64).tobytes())
    return h.hexdigest()[:16]


def clip_set(
    split: str,
    n: int,
    variant: str = "motion",
    frames: int = 16,
    size: int = 64,
    seed: int = 0,
    data_dir: str | Path | None = None,
) -> tuple[Clips, Path]:
    """(clips, cache file) of ``split``: read from the cache, else generated and cached
    (in ``data_dir``/moving-fashion, else the user cache)."""
    from neuralab.data import scenes
    from neuralab.data.store import cache_root

    if split not in SPLITS:
        raise UserError(f"clip sets have the splits {', '.join(SPLITS)}, not {split!r}")
    check_variant(variant)
    if not 4 <= frames <= 64:
        raise UserError(f"data.frames must be in [4, 64], got {frames}")
    if not 16 <= size <= 256:
        raise UserError(f"data.clip_size must be in [16, 256], got {size}")
    source_x, source_y = scenes.source_items("fashion-scenes", split, data_dir)
    seeds = [seed, scenes.SEED_CODES[split]]
    settings = {"variant": variant, "frames": frames, "size": size, "n": n, "seed": seeds}
    key = cache_key(settings, source_x, source_y)
    root = Path(data_dir).expanduser() if data_dir is not None else cache_root()
    path = root / NAME / f"{variant}-{split}-{n}-{key}.npz"
    if path.exists():
        return scenes.load_file(path, Clips, "clip set"), path
    clips = generate(source_x, source_y, n, variant, frames, size, seeds)
    scenes.save(clips, path, compress=False)  # noise does not compress; reading is faster
    return clips, path


def load_clip_split(cfg: DataConfig, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips (N, T, 1, S, S) uint8 and labels (N,) int64 of a split: train and val share
    ``cfg.clips_train`` clips, ``cfg.val_fraction`` of them for val; each split's clips hold
    only its own Fashion-MNIST images (``scenes.source_items``)."""
    from neuralab.data.splits import generated_size

    n = generated_size(split, cfg.clips_train, cfg.clips_test, cfg.val_fraction)
    found, _ = clip_set(split, n, cfg.variant, cfg.frames, cfg.clip_size, 0, cfg.data_dir or None)
    return torch.from_numpy(found.clips), torch.from_numpy(found.labels)


def load_test_videos(cfg: DataConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``cfg.videos_test`` test videos (N, ``cfg.video_frames``, 1, S, S) uint8, drawn apart
    from the test clips from Fashion-MNIST's test images only, and their labels (N,)."""
    found, _ = clip_set(
        "test",
        cfg.videos_test,
        cfg.variant,
        cfg.video_frames,
        cfg.clip_size,
        1,  # not the test clips' seed
        cfg.data_dir or None,
    )
    return torch.from_numpy(found.clips), torch.from_numpy(found.labels)

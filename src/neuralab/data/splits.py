"""Splits as in-memory tensors: ``load``, ``info`` and ``channel_stats``.

Whole datasets fit in memory on a laptop, so a split is two tensors and batches
are taken by index. The val split is carved from the official training set by a
seeded permutation, so it is disjoint from train and the same in every run with
the same ``split_seed``; the official test set is never touched for model choice.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from neuralab.data.spec import DATASETS, RawData
from neuralab.data.store import find, located
from neuralab.errors import UserError

if TYPE_CHECKING:
    from neuralab.config import DataConfig

SPLITS = ("train", "val", "test")
# A dataset without an official test set (digits) gets this fixed one, independent
# of split_seed, so test numbers stay comparable across every run ever made.
FIXED_TEST_FRACTION = 0.2
FIXED_TEST_SEED = 1234


@functools.lru_cache(maxsize=4)
def _raw(name: str, directory: Path) -> RawData:
    """Decoded files of ``name`` in ``directory``, read once per process."""
    spec = DATASETS.get(name)
    raw = spec.read(directory)
    shape = (spec.channels, spec.height, spec.width)
    for x, y in ((raw.train_x, raw.train_y), (raw.test_x, raw.test_y)):
        if x is None:
            continue
        if x.shape[1:] != shape:
            raise UserError(
                f"{directory}: images have shape {x.shape[1:]}, but {name} has {shape}; "
                f"these are not {name} files"
            )
        if len(y) and not 0 <= y.min() <= y.max() < spec.num_classes:
            raise UserError(
                f"{directory}: labels outside 0..{spec.num_classes - 1}; these are not {name} files"
            )
    return raw


def carve(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split range(n) into (rest, carved) by a seeded permutation; both sorted."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    k = round(fraction * n)
    return np.sort(perm[k:]), np.sort(perm[:k])


def generated_size(split: str, total: int, test: int, val_fraction: float) -> int:
    """The examples of ``split`` of a generated set (scenes, clips): ``test`` for test;
    ``total`` for train and val together, ``val_fraction`` of them (rounded) for val. The
    val examples are drawn apart, from the source's held-out images, never from train's."""
    if split not in SPLITS:
        raise UserError(f"split must be train, val or test, got {split!r}")
    if split == "test":
        return test
    val = round(total * val_fraction)
    if not 0 < val < total:
        raise UserError(
            f"{total} training examples with val_fraction {val_fraction} leave {total - val} "
            f"for train and {val} for val; each split needs at least one"
        )
    return val if split == "val" else total - val


def _select(
    raw: RawData, split: str, val_fraction: float, split_seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, labels, index) such that the split is images[index], labels[index]."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if not 0 <= val_fraction < 1:
        raise UserError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if raw.test_x is None:
        rest, test = carve(len(raw.train_x), FIXED_TEST_FRACTION, FIXED_TEST_SEED)
        if split == "test":
            return raw.train_x, raw.train_y, test
    elif split == "test":
        return raw.test_x, raw.test_y, np.arange(len(raw.test_x))
    else:
        rest = np.arange(len(raw.train_x))
    train, val = carve(len(rest), val_fraction, split_seed)
    return raw.train_x, raw.train_y, rest[train if split == "train" else val]


def load(
    name: str,
    split: str,
    *,
    data_dir: str | Path | None = None,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    download: bool = False,
) -> tuple[Tensor, Tensor]:
    """Images (N, C, H, W) float32 in [0, 1], contiguous, and int64 labels (N,) of a split.

    ``split`` is train, val or test; val is ``val_fraction`` of the official training
    set, chosen by ``split_seed``. ``download=True`` fetches missing files first.
    """
    spec = DATASETS.get(name)
    if spec.kind != "image":
        raise UserError(f"{name} is a {spec.kind} dataset; it has no images to load")
    _, directory = located(name, data_dir, download)
    images, labels, idx = _select(_raw(name, directory), split, val_fraction, split_seed)
    x = torch.from_numpy(images[idx]).to(torch.float32).div_(spec.max_value)  # (N, C, H, W)
    y = torch.from_numpy(labels[idx].astype(np.int64, copy=False))
    return x, y


def channel_stats(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of ``x`` (N, C, H, W), accumulated in float64.

    Done in chunks so a 60000-image dataset never needs a float64 copy in memory.
    """
    if x.ndim != 4 or x.shape[0] == 0:
        raise ValueError(f"channel_stats needs a non-empty (N, C, H, W) tensor, got {x.shape}")
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for chunk in x.split(4096):
        chunk = chunk.to(torch.float64)
        total += chunk.sum(dim=(0, 2, 3))
        squares += chunk.square().sum(dim=(0, 2, 3))
    count = x.numel() // x.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def load_split(cfg: DataConfig, split: str) -> tuple[Tensor, Tensor]:
    """``load`` with the dataset, location and split settings of a run's ``[data]`` config."""
    return load(
        cfg.name,
        split,
        data_dir=cfg.data_dir or None,
        val_fraction=cfg.val_fraction,
        split_seed=cfg.split_seed,
        download=cfg.download,
    )


def info(
    name: str,
    data_dir: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    split_seed: int = 0,
) -> dict[str, Any]:
    """A JSON-serialisable summary: shape, classes, split sizes, where found, train stats
    (for a text dataset: characters, vocabulary and split sizes in characters)."""
    spec = DATASETS.get(name)
    label, directory = find(name, data_dir)
    if spec.kind == "text":
        from neuralab.data.text import CharTokenizer, split_bounds

        text = spec.read(directory)
        bounds = split_bounds(len(text), val_fraction)
        return {
            "name": spec.name,
            "kind": "text",
            "characters": len(text),
            "vocab_size": CharTokenizer.from_text(text).vocab_size,
            "sizes": {s: b - a for s, (a, b) in bounds.items()},
            "found": {"path": str(directory), "root": label},
            "how_to_get": spec.how_to_get,
        }
    raw = _raw(name, directory)
    sizes = {s: len(_select(raw, s, val_fraction, split_seed)[2]) for s in SPLITS}
    train_x, _ = load(
        name, "train", data_dir=data_dir, val_fraction=val_fraction, split_seed=split_seed
    )
    mean, std = channel_stats(train_x)
    return {
        "name": spec.name,
        "classes": list(spec.classes),
        "num_classes": spec.num_classes,
        "shape": [spec.channels, spec.height, spec.width],
        "sizes": sizes,
        "found": {"path": str(directory), "root": label},
        "train_mean": list(mean),
        "train_std": list(std),
        "how_to_get": spec.how_to_get,
    }

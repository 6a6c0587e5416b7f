"""What a dataset is: its classes, image shape, canonical files and default augmentation.

A ``DatasetSpec`` is plain data plus one ``read`` function, so the lookup, download,
split and augmentation code stays the same for every dataset; adding a dataset is
one registration in ``catalog.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from neuralab.registry import Registry


class RawData(NamedTuple):
    """Decoded files, as stored: uint8 images (N, C, H, W) and integer labels (N,).

    ``test_x``/``test_y`` are None for a dataset without an official test set
    (digits); ``load`` then carves a fixed one from the training set.
    """

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray | None
    test_y: np.ndarray | None


@dataclass(frozen=True)
class RemoteFile:
    """One canonical file: where to download it and the sha256 of the canonical bytes.

    ``also`` lists other names that stand in for it on disk (the decompressed IDX
    file, an extracted archive), because users and distributions unpack things.
    """

    name: str
    urls: tuple[str, ...]
    sha256: str
    size: int
    also: tuple[str, ...] = ()

    def present_in(self, directory: Path) -> bool:
        return any((directory / n).exists() for n in (self.name, *self.also))


@dataclass(frozen=True)
class DatasetSpec:
    """Everything neuralab knows about one dataset, independent of where it lives."""

    name: str
    classes: tuple[str, ...]
    channels: int
    height: int
    width: int
    read: Callable[[Path], RawData | str]
    how_to_get: str
    files: tuple[RemoteFile, ...] = ()
    crop_pad: int = 0
    hflip: bool = False
    max_value: int = 255  # stored pixel value that maps to 1.0
    bundled: Callable[[], Path] | None = None  # where always-present data lives
    kind: str = "image"  # or "text": ``read`` then returns the text as a str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def missing_in(self, directory: Path) -> list[str]:
        """Canonical names of the files that ``directory`` lacks (empty: all there)."""
        return [f.name for f in self.files if not f.present_in(directory)]


DATASETS: Registry[DatasetSpec] = Registry("dataset")

"""Datasets as in-memory tensors: registry, lookup, download, splits, augmentation.

Images are float32 in [0, 1] (normalisation is a layer inside the model, so attack
budgets mean what users think); labels are int64. See ``catalog.py`` for the
registered datasets and ``store.py`` for where they are searched.

The registry, lookup and download need no PyTorch; the names that do (loading, splits, text,
augmentation) are imported on first use (PEP 562), so ``neuralab data list`` answers at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from neuralab.data import catalog as _catalog  # noqa: F401  (registers the datasets)
from neuralab.data.downloader import download
from neuralab.data.spec import DATASETS, DatasetSpec, RawData, RemoteFile
from neuralab.data.store import fetch, locate, search_roots

if TYPE_CHECKING:
    from neuralab.data.splits import channel_stats, info, load, load_split
    from neuralab.data.text import (
        CharTokenizer,
        eval_streams,
        eval_windows,
        is_text,
        load_token_splits,
        read_text_file,
    )
    from neuralab.data.transforms import augment

_LAZY = {
    **dict.fromkeys(("channel_stats", "info", "load", "load_split"), "neuralab.data.splits"),
    **dict.fromkeys(
        (
            "CharTokenizer",
            "eval_streams",
            "eval_windows",
            "is_text",
            "load_token_splits",
            "read_text_file",
        ),
        "neuralab.data.text",
    ),
    "augment": "neuralab.data.transforms",
}

__all__ = [
    "CharTokenizer",
    "DATASETS",
    "DatasetSpec",
    "RawData",
    "RemoteFile",
    "augment",
    "channel_stats",
    "download",
    "eval_streams",
    "eval_windows",
    "fetch",
    "info",
    "is_text",
    "load",
    "load_split",
    "load_token_splits",
    "locate",
    "read_text_file",
    "search_roots",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'neuralab.data' has no attribute {name!r}")

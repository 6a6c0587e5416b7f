"""Datasets as in-memory tensors: registry, lookup, download, splits, augmentation.

Images are float32 in [0, 1] (normalisation is a layer inside the model, so attack
budgets mean what users think); labels are int64. See ``catalog.py`` for the
registered datasets and ``store.py`` for where they are searched.
"""

from neuralab.data import catalog as _catalog  # noqa: F401  (registers the datasets)
from neuralab.data.downloader import download
from neuralab.data.spec import DATASETS, DatasetSpec, RawData, RemoteFile
from neuralab.data.splits import channel_stats, info, load, load_split
from neuralab.data.store import fetch, locate, search_roots
from neuralab.data.text import (
    CharTokenizer,
    eval_streams,
    eval_windows,
    is_text,
    load_token_splits,
    read_text_file,
)
from neuralab.data.transforms import augment

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

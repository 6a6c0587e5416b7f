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
from neuralab.data.transforms import augment

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "RawData",
    "RemoteFile",
    "augment",
    "channel_stats",
    "download",
    "fetch",
    "info",
    "load",
    "load_split",
    "locate",
    "search_roots",
]

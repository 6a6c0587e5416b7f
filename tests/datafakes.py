"""Tiny fake dataset files for the data tests: IDX files, CIFAR-10 archives, a local server.

Real datasets are tens of megabytes and tests have no internet, so each test builds
the few bytes it needs. Image ``i`` carries ``i`` in its first pixel, which lets a
test tell exactly which images ended up in which split.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import pickle
import struct
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np

from neuralab.data import DatasetSpec, RemoteFile
from neuralab.data.idx import read_mnist_like

IDX_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array in IDX: magic 00 00 08 ndim, big-endian dims, the values."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def numbered_images(n: int, size: int = 4) -> np.ndarray:
    """(n, size, size) uint8 images; image i has value i in its first pixel."""
    images = np.full((n, size, size), 7, dtype=np.uint8)
    images[:, 0, 0] = np.arange(n)
    return images


def write_idx_files(directory: Path, arrays: tuple[np.ndarray, ...], gz: bool = True) -> Path:
    """Write MNIST's four IDX files (train images, train labels, test images, test labels, in
    ``IDX_NAMES``' order) into ``directory``, gzipped or raw."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in zip(IDX_NAMES, arrays, strict=True):
        data = idx_bytes(array)
        if gz:
            (directory / name).write_bytes(gzip.compress(data))
        else:
            (directory / name.removesuffix(".gz")).write_bytes(data)
    return directory


def write_idx_dataset(
    directory: Path, n_train: int = 50, n_test: int = 10, gz: bool = True
) -> Path:
    """Write the four MNIST-style IDX files (4x4 images, labels i % 10) into ``directory``."""
    arrays = (
        numbered_images(n_train),
        np.arange(n_train, dtype=np.uint8) % 10,
        numbered_images(n_test),
        np.arange(n_test, dtype=np.uint8) % 10,
    )
    return write_idx_files(directory, arrays, gz)


def write_ink_mnist(directory: Path, n_train: int = 40, n_test: int = 20) -> np.ndarray:
    """Write MNIST's four IDX files into ``directory``: 28x28 stand-ins, image i a rectangle
    of ink of value 100 + i whose size and place vary with i, labels i % 10. Returns the
    labels, train then test."""
    rng = np.random.default_rng(0)
    n = n_train + n_test
    images = np.zeros((n, 28, 28), np.uint8)
    for i, image in enumerate(images):
        top, left = rng.integers(2, 8, 2)
        image[top : top + 12 + i % 9, left : left + 10 + i // 9 % 9] = 100 + i
    labels = (np.arange(n) % 10).astype(np.uint8)
    arrays = (images[:n_train], labels[:n_train], images[n_train:], labels[n_train:])
    write_idx_files(directory, arrays)
    return labels


def tiny_spec(name: str = "tiny", files: tuple[RemoteFile, ...] | None = None) -> DatasetSpec:
    """A 1x4x4 IDX dataset spec whose files are the ones ``write_idx_dataset`` writes."""
    if files is None:
        files = tuple(RemoteFile(n, (), "0" * 64, 0, also=(n[:-3],)) for n in IDX_NAMES)
    return DatasetSpec(
        name=name,
        classes=tuple(str(d) for d in range(10)),
        channels=1,
        height=4,
        width=4,
        read=read_mnist_like,
        how_to_get=f"`neuralab data fetch {name}`",
        files=files,
    )


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cifar_batches(n: int = 4) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Five train batches and a test batch of ``n`` images each, data[i, 0] = batch * n + i."""
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    batches = {}
    for b, name in enumerate(names):
        data = np.full((n, 3072), 9, dtype=np.uint8)
        data[:, 0] = np.arange(b * n, (b + 1) * n)
        batches[name] = (data, [(b + i) % 10 for i in range(n)])
    return batches


def pickled_batch(data: np.ndarray, labels: object) -> bytes:
    """A batch as CIFAR-10 stores it: a pickled dict with bytes keys."""
    return pickle.dumps({b"batch_label": b"fake", b"data": data, b"labels": labels}, protocol=4)


def binary_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch in the binary version: each record is 1 label byte then 3072 pixel bytes."""
    return np.concatenate([np.asarray(labels, np.uint8)[:, None], data], axis=1).tobytes()


def write_tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def http_server(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 in a thread; yields the base URL, shuts down after."""
    handler = partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

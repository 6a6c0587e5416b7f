"""Reader for CIFAR-10 (Krizhevsky, 2009), python or binary version, archived or extracted.

The canonical python download holds Python pickles, and unpickling runs whatever
callables the file names. A file a user hands us is never unpickled with the plain
unpickler: ``_SafeUnpickler`` resolves only the numpy globals needed to rebuild a
uint8 array and refuses everything else. The binary version (1 label byte + 3072
pixel bytes per record) needs no pickle at all and is read too.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from neuralab.data.spec import RawData
from neuralab.errors import UserError

BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")
TEST_BATCH = "test_batch"
PIXELS = 3 * 32 * 32  # one image: 1024 red, 1024 green, 1024 blue, each row-major 32x32
FIX = "delete it and run `neuralab data fetch cifar10`"

# ndarray.__reduce__ names numpy's array rebuilder; taking it from there avoids
# importing a private module whose path changed between numpy 1 and 2.
_RECONSTRUCT = np.ndarray((0,), np.uint8).__reduce__()[0]
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _SafeUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays, dicts, lists and strings, nothing else."""

    def __init__(self, data: bytes, source: str) -> None:
        super().__init__(io.BytesIO(data), encoding="bytes")  # the batches are Python 2 pickles
        self.source = source

    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UserError(
                f"{self.source}: refusing to unpickle {module}.{name}; a CIFAR-10 batch holds "
                f"only numpy arrays, so this file is not genuine; {FIX}"
            ) from None


def _decode_pickle(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _SafeUnpickler(data, source).load()
    except UserError:
        raise
    except Exception as err:  # any malformed pickle: the file is corrupt, not our bug
        raise UserError(f"{source}: corrupt CIFAR-10 batch ({err!r}); {FIX}") from None
    if not isinstance(batch, dict):
        raise UserError(f"{source}: a CIFAR-10 batch is a dict, got {type(batch).__name__}; {FIX}")
    batch = {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    images, labels = batch.get("data"), batch.get("labels")
    if not (
        isinstance(images, np.ndarray)
        and images.dtype == np.uint8
        and images.ndim == 2
        and images.shape[1] == PIXELS
    ):
        raise UserError(f"{source}: key 'data' is not an N x {PIXELS} uint8 array; {FIX}")
    labels = np.asarray(labels) if isinstance(labels, list | tuple | np.ndarray) else None
    if labels is None or labels.shape != (len(images),) or labels.dtype.kind not in "iu":
        raise UserError(f"{source}: 'labels' must be a list of {len(images)} integers; {FIX}")
    return images, labels.astype(np.int64)


def _decode_binary(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    if len(data) % (1 + PIXELS):
        raise UserError(f"{source}: length {len(data)} is not a multiple of {1 + PIXELS}; {FIX}")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, 1 + PIXELS)
    return records[:, 1:], records[:, 0].astype(np.int64)


# What may stand for the canonical download, in the order we look: (name, format).
SOURCES = (
    ("cifar-10-python.tar.gz", "python"),
    ("cifar-10-batches-py", "python"),
    ("cifar-10-binary.tar.gz", "binary"),
    ("cifar-10-batches-bin", "binary"),
)


def _batch_name(member: str, fmt: str) -> str:
    """``cifar-10-batches-bin/data_batch_1.bin`` -> ``data_batch_1``."""
    name = member.rsplit("/", 1)[-1]
    return name.removesuffix(".bin") if fmt == "binary" else name


def _read_members(path: Path, fmt: str) -> dict[str, bytes]:
    """The bytes of every batch file, from a tar.gz (no extraction) or a directory."""
    wanted = {*BATCHES, TEST_BATCH}
    if path.is_dir():
        files = [p for p in path.iterdir() if _batch_name(p.name, fmt) in wanted]
        return {_batch_name(p.name, fmt): p.read_bytes() for p in files}
    blobs = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                name = _batch_name(member.name, fmt)
                if member.isfile() and name in wanted:
                    blobs[name] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise UserError(f"{path}: not a readable tar.gz archive ({err}); {FIX}") from None
    return blobs


def read_cifar10(directory: Path) -> RawData:
    """Read CIFAR-10 from the first of ``SOURCES`` found in ``directory``."""
    path, fmt = next((directory / n, f) for n, f in SOURCES if (directory / n).exists())
    blobs = _read_members(path, fmt)
    missing = [b for b in (*BATCHES, TEST_BATCH) if b not in blobs]
    if missing:
        raise UserError(f"{path}: lacks {', '.join(missing)}; {FIX}")
    decode = _decode_pickle if fmt == "python" else _decode_binary
    train = [decode(blobs[b], f"{path}/{b}") for b in BATCHES]
    test_x, test_y = decode(blobs[TEST_BATCH], f"{path}/{TEST_BATCH}")
    train_x = np.concatenate([x for x, _ in train]).reshape(-1, 3, 32, 32)
    train_y = np.concatenate([y for _, y in train])
    return RawData(train_x, train_y, test_x.reshape(-1, 3, 32, 32), test_y)

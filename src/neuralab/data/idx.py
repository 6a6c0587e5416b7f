"""Reader for the IDX format of MNIST and Fashion-MNIST (LeCun et al., 1998).

An IDX file is a 4-byte magic ``00 00 <dtype> <ndim>``, ``ndim`` big-endian uint32
dimensions, then exactly prod(dims) values. We accept only what these datasets
use (dtype 0x08, unsigned bytes) and check the length exactly, because a truncated
or padded file is a corrupt download that would otherwise train on garbage.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from neuralab.data.spec import RawData
from neuralab.errors import UserError

IMAGES_MAGIC = 0x00000803  # uint8, 3 dims: (N, H, W)
LABELS_MAGIC = 0x00000801  # uint8, 1 dim: (N,)


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when it is a ``.gz``."""
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        return gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as err:
        raise UserError(
            f"{path}: not a valid gzip file ({err}); delete it and fetch again"
        ) from None


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """Parse one IDX file (``.gz`` or raw) whose magic must be ``magic``; uint8 array."""
    path = Path(path)
    data = _read_bytes(path)
    fix = "delete it and fetch again"
    if len(data) < 4:
        raise UserError(f"{path}: truncated IDX file ({len(data)} bytes, no header); {fix}")
    (found,) = struct.unpack(">I", data[:4])
    if found != magic:
        raise UserError(
            f"{path}: wrong IDX magic 0x{found:08x}, expected 0x{magic:08x}; "
            f"not {'an image' if magic == IMAGES_MAGIC else 'a label'} file of this dataset"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"{path}: truncated IDX header ({len(data)} of {header} bytes); {fix}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected, payload = math.prod(dims), len(data) - header
    if payload < expected:
        raise UserError(
            f"{path}: truncated IDX file, {payload} data bytes but dims {dims} need "
            f"{expected}; {fix}"
        )
    if payload > expected:
        raise UserError(
            f"{path}: wrong IDX length, {payload - expected} extra bytes after the {expected} "
            f"that dims {dims} need; {fix}"
        )
    return np.frombuffer(data, dtype=np.uint8, count=expected, offset=header).reshape(dims)


def _find(directory: Path, stem: str) -> Path:
    """``stem.gz`` if present, else the decompressed ``stem`` (callers checked one exists)."""
    gz = directory / f"{stem}.gz"
    return gz if gz.exists() else directory / stem


def _read_pair(directory: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    images_path = _find(directory, f"{prefix}-images-idx3-ubyte")
    labels_path = _find(directory, f"{prefix}-labels-idx1-ubyte")
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise UserError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} "
            "labels; the files do not belong together, fetch both again"
        )
    return images[:, None], labels  # (N, 1, H, W), (N,)


def read_mnist_like(directory: Path) -> RawData:
    """Read the four ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` files."""
    train_x, train_y = _read_pair(directory, "train")
    test_x, test_y = _read_pair(directory, "t10k")
    return RawData(train_x, train_y, test_x, test_y)

"""File readers: IDX (MNIST, Fashion-MNIST) and CIFAR-10, including hostile files."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch
from datafakes import (
    binary_batch,
    cifar_batches,
    idx_bytes,
    numbered_images,
    pickled_batch,
    write_idx_dataset,
    write_tar_gz,
)

from neuralab.data import load
from neuralab.data.cifar import read_cifar10
from neuralab.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx, read_mnist_like
from neuralab.errors import UserError


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    """An IDX file we write reads back as the same array, gzipped or raw."""
    images = numbered_images(6, size=5)
    data = idx_bytes(images)
    path = tmp_path / ("x.gz" if gz else "x")
    path.write_bytes(gzip.compress(data) if gz else data)
    out = read_idx(path, IMAGES_MAGIC)
    assert out.dtype == np.uint8 and out.shape == (6, 5, 5)
    np.testing.assert_array_equal(out, images)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:-1], "truncated IDX file"),
        (lambda b: b[:10], "truncated IDX header"),
        (lambda b: b[:2], "truncated IDX file"),
        (lambda b: b + b"\x00\x00", "2 extra bytes"),
        (lambda b: b"\x00\x00\x08\x01" + b[4:], "wrong IDX magic 0x00000801"),
        (lambda b: b"\x00\x00\x0d\x03" + b[4:], "wrong IDX magic 0x00000d03"),
    ],
    ids=["truncated", "short-header", "no-header", "extra-bytes", "label-magic", "float-dtype"],
)
def test_idx_rejects_bad_files(tmp_path, mutate, message):
    """Truncated files, extra bytes and a wrong magic are each a one-line UserError naming the
    file and the problem, never an array of garbage."""
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(mutate(idx_bytes(numbered_images(3))))
    with pytest.raises(UserError, match=message) as err:
        read_idx(path, IMAGES_MAGIC)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_idx_rejects_corrupt_gzip(tmp_path):
    """A damaged .gz is a UserError saying so, not a zlib traceback."""
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(100, np.uint8)))[:-8])
    with pytest.raises(UserError, match="not a valid gzip file"):
        read_idx(path, LABELS_MAGIC)


def test_idx_rejects_count_mismatch(tmp_path):
    """Images and labels of a split must have the same count."""
    write_idx_dataset(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros(9, np.uint8)))
    )
    with pytest.raises(UserError, match="10 images but .* has 9 labels"):
        read_mnist_like(tmp_path)


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_like_reads_gz_and_raw(tmp_path, gz):
    """The four files read as (N, 1, H, W) images and (N,) labels, .gz or decompressed."""
    raw = read_mnist_like(write_idx_dataset(tmp_path, n_train=12, n_test=5, gz=gz))
    assert raw.train_x.shape == (12, 1, 4, 4) and raw.test_x.shape == (5, 1, 4, 4)
    np.testing.assert_array_equal(raw.train_x[:, 0, 0, 0], np.arange(12))
    np.testing.assert_array_equal(raw.test_y, np.arange(5) % 10)


def _python_members(batches, prefix="cifar-10-batches-py/"):
    return {prefix + name: pickled_batch(*batch) for name, batch in batches.items()}


def _check_cifar(raw, batches):
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    expected_x = np.concatenate([d for d, _ in train]).reshape(-1, 3, 32, 32)
    np.testing.assert_array_equal(raw.train_x, expected_x)
    np.testing.assert_array_equal(raw.train_y, np.concatenate([y for _, y in train]))
    np.testing.assert_array_equal(raw.test_x, batches["test_batch"][0].reshape(-1, 3, 32, 32))
    assert raw.train_y.dtype == np.int64 and raw.train_x.shape == (20, 3, 32, 32)


def test_cifar_python_tar_gz(tmp_path):
    """The python version is read straight from the tar.gz, batches in the right order."""
    batches = cifar_batches()
    write_tar_gz(tmp_path / "cifar-10-python.tar.gz", _python_members(batches))
    _check_cifar(read_cifar10(tmp_path), batches)


def test_cifar_python_extracted(tmp_path):
    """An extracted cifar-10-batches-py/ directory reads the same as the archive."""
    batches = cifar_batches()
    for name, data in _python_members(batches).items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(data)
    _check_cifar(read_cifar10(tmp_path), batches)


def test_cifar_binary_tar_gz(tmp_path):
    """The binary version (label byte + 3072 pixels per record) reads the same, no pickle."""
    batches = cifar_batches()
    members = {
        f"cifar-10-batches-bin/{name}.bin": binary_batch(*batch) for name, batch in batches.items()
    }
    write_tar_gz(tmp_path / "cifar-10-binary.tar.gz", members)
    _check_cifar(read_cifar10(tmp_path), batches)


class _OpensAFile:
    """Unpickling this calls open(marker, "w"): code execution if the unpickler allows it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_cifar_refuses_code_in_pickle(tmp_path):
    """A batch whose pickle would call a function is refused with a UserError before anything
    runs: the marker file that the call would create never appears."""
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_OpensAFile(marker), protocol=4)
    pickle.loads(evil).close()  # control: the plain unpickler does run it
    assert marker.exists()
    marker.unlink()

    batches = cifar_batches()
    members = _python_members(batches)
    members["cifar-10-batches-py/data_batch_3"] = pickled_batch(
        batches["data_batch_3"][0], _OpensAFile(marker)
    )
    write_tar_gz(tmp_path / "cifar-10-python.tar.gz", members)
    with pytest.raises(UserError, match=r"data_batch_3: refusing to unpickle .*open"):
        read_cifar10(tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (pickle.dumps([1, 2], protocol=4), "is a dict"),
        (pickled_batch(np.zeros((4, 3072), np.int32), [0] * 4), "key 'data'"),
        (pickled_batch(np.zeros((4, 100), np.uint8), [0] * 4), "key 'data'"),
        (pickled_batch(np.zeros((4, 3072), np.uint8), [0] * 3), "'labels' must be"),
        (pickled_batch(np.zeros((4, 3072), np.uint8), ["a"] * 4), "'labels' must be"),
        (b"\x80\x04garbage", "corrupt CIFAR-10 batch"),
    ],
    ids=["not-dict", "int32", "short-rows", "label-count", "label-type", "garbage"],
)
def test_cifar_validates_batches(tmp_path, batch, message):
    """Batches of the wrong structure are UserErrors naming the batch file."""
    members = _python_members(cifar_batches())
    members["cifar-10-batches-py/test_batch"] = batch
    write_tar_gz(tmp_path / "cifar-10-python.tar.gz", members)
    with pytest.raises(UserError, match=f"test_batch: .*{message}"):
        read_cifar10(tmp_path)


def test_cifar_missing_batch_and_bad_archive(tmp_path):
    """An archive lacking a batch, or one that is not a tar.gz, is a UserError."""
    members = _python_members(cifar_batches())
    del members["cifar-10-batches-py/data_batch_2"]
    write_tar_gz(tmp_path / "cifar-10-python.tar.gz", members)
    with pytest.raises(UserError, match="lacks data_batch_2"):
        read_cifar10(tmp_path)
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(UserError, match="not a readable tar.gz"):
        read_cifar10(tmp_path)


def test_cifar_loads_through_registry(tmp_path):
    """load('cifar10') on a fake archive in data_dir gives float32 (N, 3, 32, 32) in [0, 1],
    channels in CIFAR's planar order (red plane first)."""
    batches = cifar_batches()
    (tmp_path / "cifar10").mkdir()
    write_tar_gz(tmp_path / "cifar10" / "cifar-10-python.tar.gz", _python_members(batches))
    x, y = load("cifar10", "test", data_dir=tmp_path)
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x[:, 0, 0, 0].mul(255).round().tolist() == [20, 21, 22, 23]
    assert torch.all(x[:, 1:] == 9 / 255)
    train, _ = load("cifar10", "train", data_dir=tmp_path, val_fraction=0.25)
    assert train.shape == (15, 3, 32, 32)

"""Dataset registry, lookup order, splits, statistics, ``info`` and augmentation."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_dataset
from datafakes import tiny_spec, write_idx_dataset

from neuralab.data import (
    DATASETS,
    augment,
    channel_stats,
    info,
    load,
    locate,
    search_roots,
    splits,
    store,
)
from neuralab.errors import UserError


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """Isolated search roots (NEURALAB_DATA unset, cache and system root in tmp_path) and a
    registered fake 'tiny' dataset; yields a dict of the root directories."""
    paths = {k: tmp_path / k for k in ("data_dir", "env", "cache", "system")}
    monkeypatch.delenv("NEURALAB_DATA", raising=False)
    monkeypatch.setenv("NEURALAB_CACHE", str(paths["cache"]))
    monkeypatch.setattr(store, "SYSTEM_ROOT", paths["system"])
    monkeypatch.setitem(DATASETS._entries, "tiny", tiny_spec())
    return paths


def test_registry_and_specs():
    """The four image datasets, tiny shakespeare, the two scene sets, the captioned one, the
    clips, the Bible's genres, its two translation pairs, the fortunes and the two speech
    sets (their classes: the words of their transcripts) are registered with
    the documented classes, shapes, augmentation defaults and a sha256 (64 hex digits) for
    every canonical file."""
    assert DATASETS.names() == [
        "bible-en-es",
        "bible-genre",
        "bible-kjv-web",
        "cifar10",
        "digits",
        "fashion-mnist",
        "fashion-scenes",
        "fashion-scenes-captions",
        "fortunes",
        "mnist",
        "mnist-scenes",
        "moving-fashion",
        "spoken-commands",
        "spoken-digits",
        "tinyshakespeare",
    ]
    assert DATASETS.get("spoken-digits").classes[:3] == ("zero", "one", "two")
    assert DATASETS.get("spoken-commands").kind == "speech"
    assert len(DATASETS.get("spoken-commands").classes) == 28
    assert DATASETS.get("fashion-scenes").classes == DATASETS.get("fashion-mnist").classes
    fashion = DATASETS.get("fashion-mnist")
    assert fashion.classes[0] == "T-shirt/top" and fashion.classes[-1] == "Ankle boot"
    assert fashion.num_classes == 10 and (fashion.channels, fashion.height) == (1, 28)
    assert "apt-get install dataset-fashion-mnist" in fashion.how_to_get
    images = [n for n in DATASETS if DATASETS.get(n).kind == "image"]
    augs = {n: (DATASETS.get(n).crop_pad, DATASETS.get(n).hflip) for n in images}
    assert augs == {
        "fashion-mnist": (2, True),
        "mnist": (2, False),
        "digits": (1, False),
        "cifar10": (4, True),
    }
    shakespeare = DATASETS.get("tinyshakespeare")
    assert shakespeare.kind == "text" and [f.size for f in shakespeare.files] == [1115394]
    for name in ("fashion-mnist", "mnist", "cifar10", "tinyshakespeare"):
        for file in DATASETS.get(name).files:
            assert re.fullmatch(r"[0-9a-f]{64}", file.sha256) and file.size > 0 and file.urls
    assert DATASETS.get("mnist").files[0].urls[0].startswith("https://ossci-datasets")


def test_search_roots_order_and_cache_location(tmp_path, monkeypatch):
    """Roots are data_dir (else NEURALAB_DATA), cache, system; the cache is NEURALAB_CACHE,
    else XDG_CACHE_HOME/neuralab, else ~/.cache/neuralab."""
    monkeypatch.setattr(store, "SYSTEM_ROOT", Path("/usr/share/datasets"))
    monkeypatch.setenv("NEURALAB_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("NEURALAB_CACHE", str(tmp_path / "c"))
    assert search_roots(tmp_path / "d") == [
        ("data_dir", tmp_path / "d"),
        ("cache", tmp_path / "c"),
        ("system", Path("/usr/share/datasets")),
    ]
    assert search_roots()[0] == ("NEURALAB_DATA", tmp_path / "env")
    monkeypatch.delenv("NEURALAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert search_roots()[1] == ("cache", tmp_path / "xdg" / "neuralab")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert search_roots()[1] == ("cache", tmp_path / "home" / ".cache" / "neuralab")


def test_lookup_order(roots, monkeypatch):
    """data_dir beats NEURALAB_DATA beats the cache beats the system root."""
    for path in roots.values():
        write_idx_dataset(path / "tiny")
    monkeypatch.setenv("NEURALAB_DATA", str(roots["env"]))
    assert locate("tiny", roots["data_dir"]) == roots["data_dir"] / "tiny"
    assert locate("tiny") == roots["env"] / "tiny"
    monkeypatch.delenv("NEURALAB_DATA")
    assert locate("tiny") == roots["cache"] / "tiny"
    for file in (roots["cache"] / "tiny").iterdir():
        file.unlink()
    assert locate("tiny") == roots["system"] / "tiny"


def test_missing_dataset_error_names_every_place(roots, monkeypatch):
    """A missing dataset is one line naming every place searched (and an incomplete copy),
    `neuralab data fetch`, --data-dir and NEURALAB_DATA."""
    monkeypatch.setenv("NEURALAB_DATA", str(roots["env"]))
    (roots["cache"] / "tiny").mkdir(parents=True)
    (roots["cache"] / "tiny" / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(UserError) as err:
        locate("tiny")
    message = str(err.value)
    assert "\n" not in message
    for place in (roots["env"], roots["cache"], roots["system"]):
        assert str(place / "tiny") in message
    assert "lacks train-labels-idx1-ubyte.gz" in message
    assert "neuralab data fetch tiny" in message
    assert "--data-dir" in message and "NEURALAB_DATA" in message


def test_missing_fashion_mnist_mentions_apt(roots):
    """Where a Debian package exists, the error names it."""
    roots["data_dir"].mkdir(parents=True, exist_ok=True)
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        locate("fashion-mnist", roots["data_dir"])


def test_a_data_directory_that_does_not_exist_is_an_error(roots):
    """An explicit data directory (--data-dir, data.data_dir) that is not there is said so,
    never silently replaced by $NEURALAB_DATA, the cache or /usr/share/datasets."""
    with pytest.raises(UserError, match="data directory .* does not exist"):
        locate("digits", roots["data_dir"] / "typo")


def test_splits_deterministic_disjoint_complete(roots):
    """train and val are disjoint, their union is the official training set, sizes are right,
    the same split_seed gives the same split and another seed another one."""
    write_idx_dataset(roots["cache"] / "tiny", n_train=50, n_test=10)
    ids = {}
    for split in ("train", "val", "test"):
        x, y = load("tiny", split)
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.is_contiguous()
        assert x.shape[1:] == (1, 4, 4) and 0 <= x.min() and x.max() <= 1
        ids[split] = (x[:, 0, 0, 0] * 255).round().long().tolist()
        assert y.tolist() == [i % 10 for i in ids[split]]  # labels travel with their images
    assert (len(ids["train"]), len(ids["val"]), len(ids["test"])) == (45, 5, 10)
    assert not set(ids["train"]) & set(ids["val"])
    assert sorted(ids["train"] + ids["val"]) == list(range(50))
    assert ids["test"] == list(range(10))
    again = (load("tiny", "val")[0][:, 0, 0, 0] * 255).round().long().tolist()
    other = (load("tiny", "val", split_seed=1)[0][:, 0, 0, 0] * 255).round().long().tolist()
    assert again == ids["val"] and other != ids["val"]


def test_split_arguments(roots):
    """val_fraction=0 gives an empty val; a bad split or fraction is a UserError."""
    write_idx_dataset(roots["cache"] / "tiny")
    x, y = load("tiny", "val", val_fraction=0)
    assert x.shape == (0, 1, 4, 4) and y.shape == (0,)
    assert load("tiny", "train", val_fraction=0)[0].shape[0] == 50
    with pytest.raises(UserError, match="unknown split 'valid'"):
        load("tiny", "valid")
    with pytest.raises(UserError, match="val_fraction"):
        load("tiny", "val", val_fraction=1.0)


def test_generated_sets_share_their_training_examples_with_val():
    """A generated set's train and val split data.scenes_train between them, val the rounded
    val_fraction (80,000 at 0.05: 76,000 + 4,000, worked by hand); test keeps its own size;
    a share that leaves a split empty is a UserError."""
    generated_size = splits.generated_size
    sizes = [generated_size(s, 80000, 2000, 0.05) for s in ("train", "val", "test")]
    assert sizes == [76000, 4000, 2000]
    assert [generated_size(s, 30, 10, 0.1) for s in ("train", "val")] == [27, 3]
    with pytest.raises(UserError, match="leave 4 for train and 0 for val"):
        generated_size("val", 4, 10, 0.1)
    with pytest.raises(UserError, match="split must be train, val or test"):
        generated_size("test_comp", 4, 10, 0.1)


def test_files_are_read_once(roots, monkeypatch):
    """Loading train, val and test decodes the files once (in-process cache)."""
    write_idx_dataset(roots["cache"] / "tiny")
    calls = []
    spec = tiny_spec()
    counting = dataclasses.replace(spec, read=lambda d: calls.append(d) or spec.read(d))
    monkeypatch.setitem(DATASETS._entries, "tiny", counting)
    splits._raw.cache_clear()
    for split in ("train", "val", "test"):
        load("tiny", split)
    assert len(calls) == 1


def test_wrong_shape_files_rejected(roots, monkeypatch):
    """Files whose images do not have the dataset's shape are a UserError, not a crash later."""
    write_idx_dataset(roots["cache"] / "tiny")
    monkeypatch.setitem(DATASETS._entries, "tiny", dataclasses.replace(tiny_spec(), height=28))
    splits._raw.cache_clear()
    with pytest.raises(UserError, match="are not tiny files"):
        load("tiny", "train")


def test_digits_splits():
    """digits: 1797 images in [0, 1] (16 maps to 1); a fixed 20% test split whatever the
    split_seed; train, val and test together are the whole dataset."""
    from sklearn.datasets import load_digits

    test_a, ya = load("digits", "test", split_seed=0)
    test_b, yb = load("digits", "test", split_seed=7, val_fraction=0.3)
    assert torch.equal(test_a, test_b) and torch.equal(ya, yb) and len(test_a) == 359
    train, _ = load("digits", "train")
    val, _ = load("digits", "val")
    assert train.shape == (1294, 1, 8, 8) and len(val) == 144
    assert train.dtype == torch.float32 and train.min() == 0 and train.max() == 1
    rows = torch.cat([train, val, test_a]).flatten(1).mul(16).round().tolist()
    expected = load_digits().data.tolist()
    assert sorted(rows) == sorted(expected)


def test_channel_stats_matches_torch():
    """Per-channel mean and population std agree with torch's float64 reductions."""
    x = torch.rand(10, 3, 5, 6, generator=torch.Generator().manual_seed(0))
    mean, std = channel_stats(x)
    flat = x.double().transpose(0, 1).flatten(1)  # (C, N*H*W)
    torch.testing.assert_close(torch.tensor(mean, dtype=torch.float64), flat.mean(1))
    torch.testing.assert_close(torch.tensor(std, dtype=torch.float64), flat.std(1, correction=0))


def test_info_is_json_serialisable(roots):
    """info reports name, classes, shape, split sizes, where it was found, train stats and
    how to get it, all as plain JSON values."""
    write_idx_dataset(roots["system"] / "tiny")
    out = json.loads(json.dumps(info("tiny", val_fraction=0.2)))
    assert out["name"] == "tiny" and out["num_classes"] == 10 and len(out["classes"]) == 10
    assert out["shape"] == [1, 4, 4]
    assert out["sizes"] == {"train": 40, "val": 10, "test": 10}
    assert out["found"] == {"path": str(roots["system"] / "tiny"), "root": "system"}
    train, _ = load("tiny", "train", val_fraction=0.2)
    assert out["train_mean"] == pytest.approx([train.mean().item()])
    assert out["train_std"] == pytest.approx([train.std(correction=0).item()])
    assert "neuralab data fetch tiny" in out["how_to_get"]


def _batch(n=16, c=2, h=6, w=5):
    """Images whose every pixel value is distinct and non-zero (so padding is recognisable)."""
    return (torch.arange(n * c * h * w, dtype=torch.float32) + 1).reshape(n, c, h, w) / 1000


def test_augment_shape_determinism_and_no_mutation():
    """Shape is preserved, the same generator seed gives the same result, x is untouched."""
    x = _batch()
    before = x.clone()
    a = augment(x, generator=torch.Generator().manual_seed(3), crop_pad=2, hflip=True)
    b = augment(x, generator=torch.Generator().manual_seed(3), crop_pad=2, hflip=True)
    assert a.shape == x.shape and torch.equal(a, b) and torch.equal(x, before)
    c = augment(x, generator=torch.Generator().manual_seed(4), crop_pad=2, hflip=True)
    assert not torch.equal(a, c)


def test_augment_identity():
    """crop_pad=0 and hflip=False returns an equal but new tensor."""
    x = _batch()
    out = augment(x, generator=torch.Generator(), crop_pad=0, hflip=False)
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()


def test_augment_flip_really_flips():
    """With hflip only, each image is either itself or its mirror image, and both occur."""
    x = _batch(n=64)
    out = augment(x, generator=torch.Generator().manual_seed(0), crop_pad=0, hflip=True)
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x, strict=True)]
    kept = [torch.equal(o, i) for o, i in zip(out, x, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 10 < sum(flipped) < 54


def test_augment_crops_are_shifts_with_varying_offsets():
    """Each output is a window of its zero-padded image (a per-image loop is the oracle), and
    the offsets differ across images."""
    x, pad = _batch(n=32), 2
    out = augment(x, generator=torch.Generator().manual_seed(0), crop_pad=pad, hflip=False)
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    h, w = x.shape[2:]
    offsets = set()
    for o, p in zip(out, padded, strict=True):
        found = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if torch.equal(o, p[:, dy : dy + h, dx : dx + w])
        ]
        assert len(found) == 1
        offsets.add(found[0])
    assert len(offsets) > 5


@pytest.mark.data
def test_fashion_mnist_real():
    """The real Fashion-MNIST: 60000 train+val and 10000 test 1x28x28 images in 10 classes,
    train mean about 0.286 and std about 0.353 (the commonly quoted values)."""
    require_dataset("fashion-mnist")
    train_x, train_y = load("fashion-mnist", "train")
    val_x, _ = load("fashion-mnist", "val")
    test_x, test_y = load("fashion-mnist", "test")
    assert len(train_x) + len(val_x) == 60000 and len(test_x) == 10000
    assert train_x.shape[1:] == (1, 28, 28) and test_x.dtype == torch.float32
    assert set(train_y.unique().tolist()) == set(range(10)) and test_y.dtype == torch.int64
    mean, std = channel_stats(train_x)
    assert mean[0] == pytest.approx(0.286, abs=0.002)
    assert std[0] == pytest.approx(0.353, abs=0.002)
    assert np.isclose(train_x.max().item(), 1.0)

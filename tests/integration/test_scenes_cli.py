"""`neuralab data make|show|export|info` on a scene set, end to end through the CLI, on tiny
scene sets (the real Fashion-MNIST as source)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import require_dataset
from PIL import Image
from test_cli import assert_user_error, neuralab

pytestmark = pytest.mark.data
TINY = ["--train", "40", "--test", "12", "--size", "48"]


def test_make_show_export_and_their_user_errors(tmp_path):
    require_dataset("fashion-mnist")
    out = neuralab("data", "make", "fashion-scenes", *TINY, cwd=tmp_path).stdout
    assert "train: 36 scenes" in out and "val: 4 scenes" in out and "test: 12 scenes" in out
    cached = list((tmp_path / "cache/fashion-scenes").glob("*.npz"))
    assert len(cached) == 3  # in the user cache, named by a hash of what they depend on
    stamps = {p: p.stat().st_mtime_ns for p in cached}
    neuralab("data", "make", "fashion-scenes", *TINY, cwd=tmp_path)  # read from the cache
    assert {p: p.stat().st_mtime_ns for p in cached[0].parent.iterdir()} == stamps

    neuralab("data", "show", "fashion-scenes", *TINY, "--n", "6", "--out", "g.png", cwd=tmp_path)
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    neuralab("data", "export", "fashion-scenes", *TINY, "--coco", "coco", cwd=tmp_path)
    test = json.loads((tmp_path / "coco/test.json").read_text())
    assert len(test["images"]) == 12 and len(list((tmp_path / "coco/test").glob("*.png"))) == 12
    assert {c["name"] for c in test["categories"]} >= {"Sneaker", "Bag"}

    cases = [
        (["data", "export", "fashion-scenes", *TINY, "--coco", "coco"], "not an empty directory"),
        (["data", "make", "fashion-mnist", *TINY], "not a scene set"),
        (["data", "make", "fashion-scenes", "--size", "8"], "size must be in"),
        (["data", "make", "fashion-scenes", "--train", "0"], "--train and --test must be >= 1"),
        (["data", "fetch", "fashion-scenes"], "generated, not downloaded"),
        (["data", "show", "fashion-scenes", *TINY, "--n", "0"], "--n must be in"),
    ]
    for args, words in cases:
        assert_user_error(neuralab(*args, cwd=tmp_path, check=False), words)


def test_segmentation_preset_trains_tests_predicts_and_is_attacked(tmp_path):
    """`neuralab train fashion_scenes_seg` (shortened) prints test/miou and test/pixel_acc,
    which results.json and `neuralab test --json` hold too; predict draws the masks of an image
    file of any size and gives each class's share of its pixels; attack reports the mIoU
    under PGD on the per-pixel loss, which eps = 0 leaves as it was."""
    require_dataset("fashion-mnist")
    small = ["data.scenes_train=48", "data.scenes_test=12", "data.scene_size=32"]
    args = ["fashion_scenes_seg", *small, "model.widths=8,16", "train.max_steps=6"]
    out = neuralab("train", *args, "train.val_every=3", "--run-dir", "s", "--json", cwd=tmp_path)
    result = json.loads(out.stdout)
    assert 0 <= result["test/miou"] <= 1 and 0 <= result["test/pixel_acc"] <= 1
    assert result["test/examples"] == 12 and "train/wall_s" in result
    saved = json.loads((tmp_path / "s/results.json").read_text())
    again = json.loads(neuralab("test", "s", "--json", cwd=tmp_path).stdout)
    printed = neuralab("test", "s", cwd=tmp_path).stdout
    assert f"test mIoU {result['test/miou']:.4f}" in printed and "background" in printed
    assert saved["test/miou"] == result["test/miou"] == again["test/miou"]
    Image.fromarray(np.full((50, 70, 3), 90, np.uint8)).save(tmp_path / "x.png")
    proc = neuralab("predict", "s", "x.png", "--out", "m.png", "--json", cwd=tmp_path)
    shares = json.loads(proc.stdout)["predictions"][0]["pixels"]
    assert sum(shares.values()) == pytest.approx(1, abs=1e-3)
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
    attack = ["attack", "s", "--n", "6", "--steps", "2", "--eps", "0,0.05", "--json"]
    report = json.loads(neuralab(*attack, cwd=tmp_path).stdout)
    assert report["metrics"] == ["miou", "pixel_acc"] and report["n"] == 6
    assert report["results"][0]["miou"] == report["clean"]["miou"]  # eps 0: nothing moves
    assert len(report["loss_per_step"]["0.05"]) == 3  # the start, then after each step
    assert_user_error(
        neuralab("attack", "s", "--targeted", "--target", "1", cwd=tmp_path, check=False),
        "untargeted attacks",
    )


@pytest.mark.parametrize("preset", ["fashion_scenes_det", "fashion_scenes_det_anchor"])
def test_detection_presets_train_test_predict_attack_and_report(tmp_path, preset):
    """Each detector preset (shortened) prints test/map and test/map50, which results.json and
    `neuralab test --json` hold too, and writes the test gallery and the precision-recall
    curves; predict draws the boxes found in an image file; attack reports mAP under PGD on
    the detection loss; report draws the PR curves."""
    require_dataset("fashion-mnist")
    small = ["data.scenes_train=48", "data.scenes_test=12", "data.scene_size=32"]
    args = [preset, *small, "model.widths=8,8,16,16", "model.neck=16", "train.max_steps=6"]
    out = neuralab("train", *args, "train.val_every=3", "--run-dir", "d", "--json", cwd=tmp_path)
    result = json.loads(out.stdout)
    assert 0 <= result["test/map"] <= result["test/map50"] <= 1
    assert result["test/examples"] == 12 and "train/wall_s" in result
    assert set(result["test/ap"]) >= {"Bag", "Sneaker"}
    again = json.loads(neuralab("test", "d", "--json", cwd=tmp_path).stdout)
    printed = neuralab("test", "d", cwd=tmp_path).stdout
    assert f"mAP@0.5 {result['test/map50']:.4f}" in printed and "Ankle boot" in printed
    saved = json.loads((tmp_path / "d/results.json").read_text())
    assert saved["test/map"] == result["test/map"] == again["test/map"]
    assert (tmp_path / "d/test_gallery.png").read_bytes()[:4] == b"\x89PNG"
    curves = json.loads((tmp_path / "d/test_pr.json").read_text())
    assert len(curves["recall"]) == 101 and len(curves["precision"]["Bag"]) == 101

    Image.fromarray(np.full((40, 60, 3), 120, np.uint8)).save(tmp_path / "x.png")
    proc = neuralab("predict", "d", "x.png", "--out", "b.png", "--min-score", "0", "--json",
                    cwd=tmp_path)  # fmt: skip
    objects = json.loads(proc.stdout)["predictions"][0]["objects"]
    # (after 6 steps RetinaNet may score nothing above its 0.05 threshold: no boxes)
    assert all(0.05 <= o["score"] <= 1 and len(o["box"]) == 4 for o in objects)
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
    attack = ["attack", "d", "--n", "6", "--steps", "2", "--eps", "0.05", "--json"]
    report = json.loads(neuralab(*attack, cwd=tmp_path).stdout)
    assert report["metrics"] == ["map", "map50"] and report["results"][0]["eps"] == 0.05
    neuralab("report", "d", cwd=tmp_path)
    assert (tmp_path / "d/plots/pr_curves.png").read_bytes()[:4] == b"\x89PNG"
    cases = [
        (["train", preset, "data.name=fashion-mnist"], "detection needs a scene set"),
        (["train", preset, "model.name=unet"], "cannot learn from object boxes"),
        (["predict", "d", "x.png", "--min-score", "2"], "--min-score must be in [0, 1]"),
    ]
    for argv, words in cases:
        assert_user_error(neuralab(*argv, cwd=tmp_path, check=False), words)


def test_a_detector_trains_on_mnist_scenes_where_mnist_is_present(tmp_path):
    """`neuralab train fashion_scenes_det data.name=mnist-scenes --data-dir DIR` builds the
    scenes from the MNIST files in DIR (here stand-ins of rectangles of ink) and scores the
    detector per digit class."""
    from datafakes import write_ink_mnist

    write_ink_mnist(tmp_path / "data/mnist")
    small = ["data.scenes_train=48", "data.scenes_test=12", "data.scene_size=32"]
    args = ["fashion_scenes_det", "data.name=mnist-scenes", *small, "model.widths=8,8,16,16"]
    out = neuralab("train", *args, "train.max_steps=4", "--data-dir", "data", "--run-dir", "d",
                   "--json", cwd=tmp_path)  # fmt: skip
    result = json.loads(out.stdout)
    assert 0 <= result["test/map"] <= result["test/map50"] <= 1
    assert list(result["test/ap"]) == [str(d) for d in range(10)]
    assert len(list((tmp_path / "data/mnist-scenes").glob("*.npz"))) == 3  # train, val, test

"""fashion-scenes: the generated detection and segmentation data (issue 19), checked on small
scene sets drawn from the real Fashion-MNIST."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from conftest import require_dataset

from neuralab.data import scene_export, scenes
from neuralab.errors import UserError

pytestmark = pytest.mark.data
SPEC = scenes.SceneSpec(size=64, max_side=40)


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    require_dataset("fashion-mnist")
    root = tmp_path_factory.mktemp("scenes")
    train, _ = scenes.scene_set("fashion-scenes", "train", 120, SPEC, 0, root)
    test, _ = scenes.scene_set("fashion-scenes", "test", 60, SPEC, 0, root)
    return root, train, test


def hashes(images: np.ndarray) -> set[str]:
    return {hashlib.sha256(im.tobytes()).hexdigest() for im in images}


def test_same_seed_same_scenes_bit_for_bit(sets):
    """Generating again (not from the cache) gives identical arrays; another seed does not;
    the cached file reads back equal, from arrays only."""
    root, train, _ = sets
    x, y = scenes.source_items("fashion-scenes", "train")
    again = scenes.generate(x, y, 120, SPEC, [0, 0])
    for name, a, b in zip(scenes.FIELDS, train, again, strict=True):
        assert np.array_equal(a, b), name
    other = scenes.generate(x, y, 120, SPEC, [1, 0])
    assert not np.array_equal(other.images, train.images)
    cached, path = scenes.scene_set("fashion-scenes", "train", 120, SPEC, 0, root)
    assert all(np.array_equal(a, b) for a, b in zip(cached, train, strict=True))
    assert path.suffix == ".npz" and scenes.load_file(path).counts.sum() == len(train.labels)


def test_no_test_image_appears_in_a_train_scene(sets):
    """Every item of a train scene is a Fashion-MNIST train image and none is a test image
    (compared by the hash of its pixels); test scenes use test images only."""
    _, train, test = sets
    train_x, _ = scenes.source_items("fashion-scenes", "train")
    test_x, _ = scenes.source_items("fashion-scenes", "test")
    in_train, in_test = hashes(train_x[train.sources]), hashes(test_x[test.sources])
    assert in_train <= hashes(train_x) and in_test <= hashes(test_x)
    assert not in_train & hashes(test_x)
    assert not in_test & hashes(train_x)


def test_val_scenes_hold_items_no_train_scene_holds(sets):
    """Val scenes draw from Fashion-MNIST's val carve (a tenth of its training images), the
    train scenes from the rest, so no val item (by the hash of its pixels) is one a model
    trained on: validation, like test, is on unseen items."""
    root, _, _ = sets
    val, _ = scenes.scene_set("fashion-scenes", "val", 30, SPEC, 0, root)
    train_x, _ = scenes.source_items("fashion-scenes", "train")
    val_x, _ = scenes.source_items("fashion-scenes", "val")
    assert (len(train_x), len(val_x)) == (54000, 6000)
    assert not hashes(val_x[val.sources]) & hashes(train_x)


def test_boxes_are_tight_inside_the_canvas_and_overlap_at_most_max_iou(sets):
    """Each object's visible pixels lie in its box; an object that no other box touches
    fills its box exactly (the box is tight); boxes lie in the canvas, their sides within
    the spec's range, and no two boxes of a scene overlap by more than max_iou."""
    _, train, _ = sets
    size = SPEC.size
    assert (train.boxes >= 0).all() and (train.boxes <= size).all()
    sides = np.maximum(train.boxes[:, 2] - train.boxes[:, 0], train.boxes[:, 3] - train.boxes[:, 1])
    assert sides.max() <= SPEC.max_side and sides.min() >= 4
    assert ((train.counts >= 1) & (train.counts <= SPEC.max_objects)).all()
    isolated = 0
    for i in range(len(train)):
        boxes = train.boxes[train.objects(i)]
        iou = scenes.box_iou(boxes, boxes)
        np.fill_diagonal(iou, 0)
        assert iou.max(initial=0) <= SPEC.max_iou + 1e-12
        for k, (x0, y0, x1, y1) in enumerate(boxes, start=1):
            rows, cols = np.nonzero(train.instances[i] == k)
            assert len(rows) > 0
            assert x0 <= cols.min() and cols.max() < x1 and y0 <= rows.min() and rows.max() < y1
            if iou[k - 1].max(initial=0) == 0:
                isolated += 1
                assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (x0, y0, x1, y1)
    assert isolated > 50


def test_semantic_mask_is_the_union_of_each_class_instances(sets):
    """For every class, its pixels in the semantic mask are exactly the union of the
    instance masks of that class's objects; everything else is background (0)."""
    _, train, _ = sets
    for i in range(len(train)):
        labels = train.labels[train.objects(i)]
        expected = np.zeros_like(train.semantic[i])
        for k, c in enumerate(labels, start=1):
            expected[train.instances[i] == k] = c + 1
        assert np.array_equal(train.semantic[i], expected)
        for c in range(10):
            union = np.isin(train.instances[i], np.flatnonzero(labels == c) + 1)
            assert np.array_equal(train.semantic[i] == c + 1, union)


def test_coco_export_reads_in_pycocotools_and_scores_itself_perfectly(sets):
    """The COCO dictionary loads in pycocotools (the reference implementation): the ground
    truth given back as detections scores mAP 1.0, and each RLE decodes to its instance."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    _, _, test = sets
    classes = tuple(f"c{i}" for i in range(10))
    names = [f"{i}.png" for i in range(len(test))]
    coco = COCO()
    coco.dataset = scene_export.coco_dict(test, classes, names)
    coco.createIndex()
    for ann in coco.dataset["annotations"][:50]:
        i = ann["image_id"] - 1
        k = ann["id"] - int(test.counts[:i].sum())
        assert np.array_equal(coco.annToMask(ann), test.instances[i] == k)
    dets = [{**a, "score": 1.0} for a in coco.dataset["annotations"]]
    evaluation = COCOeval(coco, coco.loadRes(dets), "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)


def test_bad_specs_are_one_line_errors():
    for spec, words in [
        (scenes.SceneSpec(size=16), "size must be in"),
        (scenes.SceneSpec(min_objects=3, max_objects=2), "objects per scene"),
        (scenes.SceneSpec(max_side=200), "item sides"),
        (scenes.SceneSpec(max_iou=1.5), "max_iou"),
    ]:
        with pytest.raises(UserError, match=words):
            spec.check()
    with pytest.raises(UserError, match="not a scene set"):
        scenes.source_items("fashion-mnist", "train")


def test_mnist_scenes_draw_from_mnist_where_it_is_present(tmp_path):
    """mnist-scenes is fashion-scenes' generator over MNIST: given MNIST's four IDX files in
    a data directory (here 28x28 stand-ins, each a distinct rectangle of ink), val scenes
    place only the train images of MNIST's val carve (a tenth, seed 0), train scenes only its
    other train images and test scenes only its test images; each object keeps its source
    image's label and shows its ink, the registry names the ten digits, and the set is
    cached under the data directory."""
    from datafakes import write_ink_mnist

    from neuralab.data import DATASETS
    from neuralab.data.splits import carve

    labels = write_ink_mnist(tmp_path / "mnist", n_train=40, n_test=20)
    rest, held = carve(40, 0.1, 0)
    spec = scenes.SceneSpec(size=64, max_side=40, clutter=0)
    train, path = scenes.scene_set("mnist-scenes", "train", 20, spec, 0, tmp_path)
    val, _ = scenes.scene_set("mnist-scenes", "val", 10, spec, 0, tmp_path)
    test, _ = scenes.scene_set("mnist-scenes", "test", 10, spec, 0, tmp_path)
    assert path.parent == tmp_path / "mnist-scenes"
    assert (train.sources < 36).all() and (val.sources < 4).all() and (test.sources < 20).all()
    assert all((train.instances[i] > 0).any() for i in range(len(train)))
    np.testing.assert_array_equal(train.labels, labels[:40][rest][train.sources])
    np.testing.assert_array_equal(val.labels, labels[:40][held][val.sources])
    np.testing.assert_array_equal(test.labels, labels[40:][test.sources])
    assert DATASETS.get("mnist-scenes").classes == DATASETS.get("mnist").classes
    assert len(DATASETS.get("mnist").classes) == 10

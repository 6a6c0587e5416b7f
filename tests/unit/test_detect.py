"""Object detection (issue 19): the two detectors' target assignment and losses on
hand-worked cases, decoding of perfect outputs, COCO mAP through pycocotools on known cases,
the flipped training batches, and the kind through the loop with an exact resume."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import require_dataset

from neuralab import config
from neuralab.errors import UserError
from neuralab.models import create_model, list_models
from neuralab.models.boxes import encode
from neuralab.models.centernet import heatmap_targets
from neuralab.models.detect import Detections, pad_targets
from neuralab.models.retinanet import assign
from neuralab.tasks.coco_map import coco_map
from neuralab.tasks.detect import FlippedSceneBatches

LN2 = math.log(2)
CLASSES = tuple(f"c{i}" for i in range(10))
# two objects on a 96x96 scene: class 1 at (9, 8)-(25, 40) and class 3 at (40, 16)-(72, 32)
TWO = pad_targets(
    [torch.tensor([[9.0, 8, 25, 40], [40, 16, 72, 32]])], [torch.tensor([1, 3])], max_objects=6
)


def test_both_detectors_learn_through_every_parameter():
    assert list_models(kind="detect") == ["centernet", "retinanet"]
    for name in ("centernet", "retinanet"):
        model = create_model(name, image_size=64, widths=(8, 8, 16, 16), neck=16)
        out = model(torch.rand(2, 3, 64, 64))
        assert out.shape[-2:] == (16, 16)  # stride 4
        loss, parts = model.loss(out, TWO.repeat(2, 1, 1) * 64 / 96)
        loss.backward()
        assert set(parts) and all(torch.isfinite(v) for v in parts.values())
        assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(UserError, match="widths must be 4"):
        create_model("centernet", widths=(8, 16))
    with pytest.raises(UserError, match=r"needs \(B, 3, H, W\) images, got \(2, 1, 64, 64\)"):
        model.detect(torch.rand(2, 1, 64, 64))


def test_centernet_targets_by_hand():
    """On the 24x24 map (stride 4): object 1 is the point (4.25, 6), so cell (4, 6) with offset
    (0.25, 0) and size (4, 8) cells; object 2 the point (14, 6), size (8, 4). Their class
    heatmaps peak at 1 there; one cell right of object 1 the Gaussian with
    σ_x = 0.54 · 4 / 6 = 0.36 gives exp(-1 / (2 · 0.36²))."""
    heat, image, index, size, offset = heatmap_targets(TWO, 10, 24, 24, 0.54)
    assert image.tolist() == [0, 0] and index.tolist() == [6 * 24 + 4, 6 * 24 + 14]
    assert size.tolist() == [[4, 8], [8, 4]] and offset.tolist() == [[0.25, 0], [0, 0]]
    assert heat[0, 1, 6, 4] == 1 and heat[0, 3, 6, 14] == 1 and heat.eq(1).sum() == 2
    assert heat[0, 1, 6, 5].item() == pytest.approx(math.exp(-1 / (2 * 0.36**2)))
    assert heat[0, 1, 7, 4].item() == pytest.approx(math.exp(-1 / (2 * 0.72**2)))
    assert heat[0, [0, 2, 4, 5, 6, 7, 8, 9]].abs().sum() == 0  # classes without objects


def test_centernet_loss_by_hand():
    """All-zero outputs (p = 1/2 everywhere, sizes and offsets 0): the focal loss is
    (2 · ¼ ln 2 + Σ_other cells (1 - Y)⁴ · ¼ ln 2) / 2 with Y the Gaussians computed here by
    a loop; size |4| + |8| + |8| + |4| over 2 objects = 12; offset 0.25 / 2."""
    model = create_model("centernet")
    loss, parts = model.loss(torch.zeros(1, 14, 24, 24), TWO)
    peaks = {1: (4, 6, 0.36, 0.72), 3: (14, 6, 0.72, 0.36)}  # class: cell x, y, σ_x, σ_y
    negative = 0.0
    for c in range(10):
        for y in range(24):
            for x in range(24):
                if c in peaks and (x, y) == peaks[c][:2]:
                    continue
                target = 0.0
                if c in peaks:
                    px, py, sx, sy = peaks[c]
                    target = math.exp(-((x - px) ** 2 / (2 * sx**2) + (y - py) ** 2 / (2 * sy**2)))
                negative += (1 - target) ** 4 * 0.25 * LN2
    assert parts["heatmap"].item() == pytest.approx((2 * 0.25 * LN2 + negative) / 2, rel=1e-5)
    assert parts["size"].item() == pytest.approx(12.0)
    assert parts["offset"].item() == pytest.approx(0.125)
    assert loss.item() == pytest.approx(parts["heatmap"].item() + 0.1 * 12 + 0.125, rel=1e-6)


def test_retinanet_assignment_by_hand():
    """Box 1 (0,0)-(10,10), box 2 (50,50)-(60,70). Anchor 0 is box 1 (IoU 1: positive);
    anchor 1 overlaps it by 100/220 = 0.45 (between 0.4 and 0.5: ignored); anchor 2 touches
    nothing (background); anchor 3 overlaps box 2 by only 70/200 = 0.35, but is box 2's best
    anchor, so it is positive for box 2 all the same."""
    targets = pad_targets(
        [torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 70]])], [torch.tensor([2, 5])], 6
    )
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 22], [80, 80, 90, 90], [50, 50, 60, 57]])
    matched, state = assign(targets, anchors, 0.5, 0.4)
    assert state.tolist() == [[1, -1, 0, 1]]
    assert matched[0, [0, 3]].tolist() == [0, 1]


def test_retinanet_loss_by_hand():
    """All-zero outputs on a 32x32 image (an 8x8 map, one 8x8 anchor per cell): every counted
    anchor and class costs the focal loss at p = 1/2, (1 - α) · ¼ ln 2 for a background
    class and α · ¼ ln 2 for the true one, over the number of positives; the box loss is the
    smooth L1 of the positives' encoded boxes (deltas predicted 0)."""
    model = create_model("retinanet", image_size=32, anchor_sizes=(8.0,), aspect_ratios=(1.0,))
    targets = pad_targets([torch.tensor([[2.0, 2, 10, 10], [17, 9, 29, 19]])],
                          [torch.tensor([0, 7])], 6)  # fmt: skip
    out = torch.zeros(1, 14, 8, 8)
    loss, parts = model.loss(out, targets)
    _, _, anchors = model.split(out)
    matched, state = assign(targets, anchors, 0.5, 0.4)
    positives = (state[0] == 1).nonzero().flatten().tolist()
    counted = int((state[0] >= 0).sum())
    focal = ((counted * 10 - len(positives)) * 0.75 + len(positives) * 0.25) * 0.25 * LN2
    assert parts["classification"].item() == pytest.approx(focal / len(positives), rel=1e-5)
    box = 0.0
    for i in positives:
        for d in encode(targets[0, matched[0, i], :4], anchors[i]).tolist():
            box += 0.5 * d * d / 0.1 if abs(d) < 0.1 else abs(d) - 0.05
    assert parts["box"].item() == pytest.approx(box / len(positives), rel=1e-5)
    assert loss.item() == pytest.approx(parts["classification"].item() + parts["box"].item())


def test_perfect_outputs_decode_to_the_truth_and_score_map_1():
    """Outputs that say exactly the targets (CenterNet: a peak, the size and the offset at
    each object's cell; RetinaNet: the class and the encoded box at each positive anchor)
    decode to the true boxes, duplicates removed by NMS, and pycocotools scores them 1."""
    centernet = create_model("centernet").eval()
    out = torch.full((1, 14, 24, 24), -10.0)
    _, _, index, size, offset = heatmap_targets(TWO, 10, 24, 24, 0.54)
    for k, label in enumerate((1, 3)):
        out[0, label].view(-1)[index[k]] = 10.0
        out[0, 10:].view(4, -1)[:, index[k]] = torch.cat([size[k], offset[k]])
    found = centernet.decode(out)
    order = found[0].labels.argsort()
    assert torch.allclose(found[0].boxes[order], TWO[0, :2, :4], atol=1e-5)

    retinanet = create_model("retinanet").eval()
    a = retinanet.num_anchors
    logits, deltas = torch.full((1, 24 * 24 * a, 10), -10.0), torch.zeros(1, 24 * 24 * a, 4)
    _, _, anchors = retinanet.split(torch.zeros(1, a * 14, 24, 24))
    matched, state = assign(TWO, anchors, 0.5, 0.4)
    for i in (state[0] == 1).nonzero().flatten().tolist():
        logits[0, i, int(TWO[0, matched[0, i], 4])] = 10.0
        deltas[0, i] = encode(TWO[0, matched[0, i], :4], anchors[i])
    as_map = [t.view(1, 24, 24, -1).permute(0, 3, 1, 2) for t in (logits, deltas)]
    found_r = retinanet.decode(torch.cat(as_map, dim=1))
    assert len(found_r[0].boxes) == 2  # several positive anchors per object, one box each
    order = found_r[0].labels.argsort()
    assert torch.allclose(found_r[0].boxes[order], TWO[0, :2, :4], atol=1e-4)
    for detections in (found, found_r):
        scores = coco_map(TWO, detections, CLASSES)
        assert scores["map"] == pytest.approx(1.0) and scores["map50"] == pytest.approx(1.0)
        assert scores["ap"][1] == pytest.approx(1.0) and scores["ap"][0] is None


def test_coco_map_on_a_hand_built_case():
    """One class, two true boxes; detections ranked: a hit (0.9), a miss (0.8), a hit (0.7).
    Precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1; COCO interpolates to 1 up to recall 0.5 and
    2/3 beyond, so AP = (51 · 1 + 50 · 2/3) / 101 on its 101 recall points, at every IoU."""
    truth = pad_targets([torch.tensor([[0.0, 0, 20, 20], [40, 40, 60, 60]])],
                        [torch.tensor([0, 0])], 3)  # fmt: skip
    found = [
        Detections(
            torch.tensor([[0.0, 0, 20, 20], [70, 70, 90, 90], [40, 40, 60, 60]]),
            torch.tensor([0.9, 0.8, 0.7]),
            torch.tensor([0, 0, 0]),
        )
    ]
    scores = coco_map(truth, found, ("thing",))
    expected = (51 + 50 * 2 / 3) / 101
    assert scores["map"] == pytest.approx(expected) and scores["map50"] == pytest.approx(expected)
    curve = scores["pr50"][0]
    assert curve[50] == pytest.approx(1) and curve[51] == pytest.approx(2 / 3)
    empty = coco_map(truth, [Detections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0))],
                     ("thing",))  # fmt: skip
    assert empty["map"] == 0.0


def test_flipped_batches_move_the_boxes_with_the_pixels():
    """Each scene is one bright rectangle at its box; after the batch's flips, the bright
    pixels of every scene are exactly its (possibly mirrored) box, and padding rows stay -1."""
    boxes = [torch.tensor([[2.0 + i, 3, 9 + 2 * i, 12]]) for i in range(8)]
    targets = pad_targets(boxes, [torch.tensor([i]) for i in range(8)], 2)
    x = torch.zeros(8, 3, 32, 32, dtype=torch.uint8)  # as the task keeps its train scenes
    for i, b in enumerate(boxes):
        x0, y0, x1, y1 = b[0].long().tolist()
        x[i, :, y0:y1, x0:x1] = 255
    batches = FlippedSceneBatches(x, targets, 8, seed=0)
    xb, yb, _ = batches.get(0)
    moved = 0
    assert xb.dtype == torch.float32 and xb.max() == 1  # made float in [0, 1]
    for img, rows in zip(xb, yb, strict=True):
        ys, xs = img[0].nonzero(as_tuple=True)
        assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == rows[0, :4].tolist()
        assert rows[1].tolist() == [-1.0] * 5
        moved += int(rows[0, 0] != targets[int(rows[0, 4]), 0, 0])
    assert 0 < moved < 8  # some scenes flipped, some not
    assert torch.equal(batches.get(3).x, batches.get(3).x)  # a pure function of the step


SCENES = [
    "data.scenes_train=64",
    "data.scenes_test=16",
    "data.scene_size=32",
    "data.val_fraction=0.25",
    "model.widths=8,8,16,16",
    "model.neck=16",
    "train.batch_size=8",
    "train.log_every=1",
    "train.val_every=4",
]


@pytest.mark.data
@pytest.mark.parametrize("preset", ["fashion_scenes_det", "fashion_scenes_det_anchor"])
def test_detection_resumes_bit_identically(tmp_path, monkeypatch, preset):
    """12 steps straight == 5 steps, Ctrl-C, resume, 7 steps: identical parameters and the
    same validation mAP, for both detectors."""
    require_dataset("fashion-mnist")
    monkeypatch.setenv("NEURALAB_CACHE", str(tmp_path / "cache"))
    from test_train import straight_and_resumed

    cfg = config.load(preset, [*SCENES, "train.max_steps=12"])
    done, resumed = straight_and_resumed(tmp_path, cfg, 5)
    assert resumed["val/map"] == done["val/map"] and 0 <= done["val/map"] <= 1
    assert done["val/examples"] == 16 and math.isfinite(done["val/loss"])

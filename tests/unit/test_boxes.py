"""Box operations (issue 19) against brute-force references written here with plain Python
loops: IoU, greedy NMS (class-wise too), and the anchor encoding's round trip."""

from __future__ import annotations

import math

import pytest
import torch

from neuralab.models.boxes import batched_nms, box_iou, decode, encode, nms


def random_boxes(n: int, seed: int, size: float = 64.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=gen) * size
    wh = torch.rand(n, 2, generator=gen) * size / 3 + 1
    return torch.cat([xy, xy + wh], dim=1).double()


def iou_by_hand(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def greedy_by_hand(boxes, scores, threshold) -> list[int]:
    """The textbook loop: visit boxes best first, keep one unless a kept box overlaps it by
    more than the threshold."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    kept: list[int] = []
    for i in order:
        if all(iou_by_hand(boxes[i], boxes[j]) <= threshold for j in kept):
            kept.append(i)
    return kept


def test_iou_equals_the_loop():
    a, b = random_boxes(13, 0), random_boxes(7, 1)
    expected = torch.tensor([[iou_by_hand(x, y) for y in b.tolist()] for x in a.tolist()])
    assert torch.allclose(box_iou(a, b), expected.double(), atol=1e-12)
    assert box_iou(a, a).diagonal().allclose(torch.ones(13, dtype=torch.float64))
    # a hand case: [0,2)x[0,2) and [1,3)x[1,3) share 1 of 7 pixels
    two = torch.tensor([[0.0, 0, 2, 2], [1.0, 1, 3, 3]])
    assert box_iou(two[:1], two[1:]).item() == pytest.approx(1 / 7)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.7])
def test_nms_equals_the_greedy_loop(seed, threshold):
    """Clustered random boxes with jittered near-copies (overlaps at every threshold) and
    distinct scores: the same boxes, in the same order (best score first)."""
    boxes = random_boxes(30, seed, size=24.0)
    jitter = torch.rand(30, 4, generator=torch.Generator().manual_seed(50 + seed)).double()
    boxes = torch.cat([boxes, boxes + jitter])
    scores = torch.rand(60, generator=torch.Generator().manual_seed(100 + seed)).double()
    kept = nms(boxes, scores, threshold)
    assert kept.tolist() == greedy_by_hand(boxes.tolist(), scores.tolist(), threshold)
    assert 1 < len(kept) < 60  # the case suppresses some boxes and keeps several


def test_batched_nms_never_suppresses_across_classes():
    """Class-wise NMS equals the greedy loop run on each class alone; identical boxes of two
    classes both survive."""
    boxes = random_boxes(40, 7, size=20.0)
    scores = torch.rand(40, generator=torch.Generator().manual_seed(8)).double()
    classes = torch.randint(0, 3, (40,), generator=torch.Generator().manual_seed(9))
    kept = set(batched_nms(boxes, scores, classes, 0.5).tolist())
    expected = set()
    for c in range(3):
        idx = (classes == c).nonzero().flatten().tolist()
        sub = greedy_by_hand([boxes[i].tolist() for i in idx], [scores[i].item() for i in idx], 0.5)
        expected |= {idx[j] for j in sub}
    assert kept == expected
    same = torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 10]])
    two = batched_nms(same, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), 0.5)
    assert sorted(two.tolist()) == [0, 1]
    assert batched_nms(same[:0], torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).numel() == 0


def test_encode_decode_round_trip_and_a_hand_case():
    boxes, anchors = random_boxes(50, 3), random_boxes(50, 4)
    assert torch.allclose(decode(encode(boxes, anchors), anchors), boxes, atol=1e-9)
    # box centred 2 px right of a 10x10 anchor, twice as wide: (0.2, 0, log 2, 0)
    deltas = encode(torch.tensor([[-3.0, 0, 17, 10]]), torch.tensor([[0.0, 0, 10, 10]]))
    assert deltas[0].tolist() == pytest.approx([0.2, 0.0, math.log(2), 0.0])

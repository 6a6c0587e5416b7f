"""Semantic segmentation (issue 19): the U-Net, the metrics against scikit-learn's, and the
kind through the loop (exact resume) on a tiny scene set from the real Fashion-MNIST."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import require_dataset
from sklearn.metrics import jaccard_score

from neuralab import config
from neuralab.errors import UserError
from neuralab.models import create_model, list_models
from neuralab.runs import read_jsonl
from neuralab.tasks.base import confusion_matrix
from neuralab.tasks.segment import iou_scores


def test_unet_keeps_the_image_size_and_learns_through_every_level():
    """(B, 3, H, W) -> (B, classes, H, W); every parameter gets a gradient; an image side the
    pooling cannot halve is a one-line error."""
    assert list_models(kind="segment") == ["fcn", "unet"]
    model = create_model("unet", num_classes=11, in_channels=3, image_size=32, widths=(8, 16, 32))
    x = torch.rand(2, 3, 32, 32)
    logits = model(x)
    assert logits.shape == (2, 11, 32, 32)
    logits.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with pytest.raises(UserError, match="must divide by 4"):
        create_model("unet", image_size=30, widths=(8, 16, 32))


def test_iou_and_pixel_accuracy_equal_scikit_learns():
    """On random label maps where some classes never occur, mIoU equals scikit-learn's macro
    Jaccard score over the classes that occur (its own definition), each class's IoU its
    per-class score, and pixel accuracy the fraction of equal pixels."""
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 7, (3, 16, 16), generator=gen)  # classes 7..9 never occur
    pred = torch.where(torch.rand(3, 16, 16, generator=gen) < 0.6, target,
                       torch.randint(0, 8, (3, 16, 16), generator=gen))  # fmt: skip
    scores = iou_scores(confusion_matrix(pred, target, 10))
    t, p = target.flatten().numpy(), pred.flatten().numpy()
    assert scores["miou"] == pytest.approx(jaccard_score(t, p, average="macro"), abs=1e-12)
    per_class = jaccard_score(t, p, average=None, labels=list(range(8)))
    assert scores["iou"][:8] == pytest.approx(per_class.tolist(), abs=1e-12)
    assert scores["iou"][8:] == [None, None]
    assert scores["pixel_acc"] == pytest.approx(float((t == p).mean()), abs=1e-12)


def test_a_hand_worked_case():
    """Truth [0 0 1 1], prediction [0 1 1 1]: IoU(0) = 1/2, IoU(1) = 2/3, mIoU 7/12."""
    scores = iou_scores(confusion_matrix(torch.tensor([0, 1, 1, 1]), torch.tensor([0, 0, 1, 1]), 2))
    assert scores["iou"] == pytest.approx([1 / 2, 2 / 3])
    assert scores["miou"] == pytest.approx(7 / 12) and scores["pixel_acc"] == 0.75


SCENES = [
    "data.scenes_train=64",
    "data.scenes_test=16",
    "data.scene_size=32",
    "data.val_fraction=0.25",
    "train.batch_size=8",
    "train.log_every=1",
    "train.val_every=4",
]


@pytest.mark.data
@pytest.mark.parametrize(
    "preset,widths",
    [
        ("fashion_scenes_seg", "model.widths=8,16"),
        ("fashion_scenes_seg_fcn", "model.widths=8,8,8,8"),
    ],
)
def test_segmentation_resumes_bit_identically(tmp_path, monkeypatch, preset, widths):
    """12 steps straight == 5 steps, Ctrl-C, resume, 7 steps: identical parameters (BatchNorm
    statistics included) and the same validation mIoU, for the U-Net and the FCN."""
    require_dataset("fashion-mnist")
    monkeypatch.setenv("NEURALAB_CACHE", str(tmp_path / "cache"))
    from test_train import straight_and_resumed

    cfg = config.load(preset, [*SCENES, widths, "train.max_steps=12"])
    done, resumed = straight_and_resumed(tmp_path, cfg, 5)
    assert resumed["val/miou"] == done["val/miou"] and 0 < done["val/miou"] <= 1
    assert {"train/examples", "val/examples"} <= set(done) and done["val/examples"] == 16
    assert np.isfinite(done["val/loss"])
    # the best checkpoint is the one of the highest val mIoU (once, the lowest was kept)
    vals = [r for r in read_jsonl(tmp_path / "a" / "metrics.jsonl") if "val/miou" in r]
    best = max(vals, key=lambda r: r["val/miou"])
    assert len({r["val/miou"] for r in vals}) > 1 and done["best_step"] == best["step"]

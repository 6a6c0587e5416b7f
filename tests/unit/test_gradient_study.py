"""The vanishing-gradient study (He et al. 2016 in miniature): its scaled SGD makes the same
steps as plain SGD, a tiny study returns its documented JSON and writes its PNGs, and a
diverged variant is reported, not raised."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import neuralab
from neuralab.probe import gradient_study as study

pytestmark = pytest.mark.usefixtures("one_thread")


def small_resnet() -> nn.Module:
    """A narrow resnet20 on 8x8 images, BatchNorm included: 20 weighted layers, fast."""
    torch.manual_seed(0)
    return neuralab.create_model("resnet20", image_size=8, widths=(4, 8, 8))


def batch(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def test_scaled_training_makes_the_same_sgd_steps():
    """The study backpropagates the loss times LOSS_SCALE and divides SGD's rate by it (to
    keep vanished gradients out of slow denormal floats): the weights after a few steps are
    bit for bit those of plain SGD on the plain loss, as scaling by 2^32 is exact."""
    x, y = batch(32)
    batches = [torch.arange(0, 16), torch.arange(16, 32), torch.arange(8, 24)]
    model = small_resnet()
    reference = copy.deepcopy(model)
    study._train(model, x, y, batches, lr=0.05, log_every=1)
    opt = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9)
    reference.train()
    for step, idx in enumerate(batches):
        for group in opt.param_groups:
            group["lr"] = 0.05 * study._lr_factor(step, len(batches), warmup=1)
        opt.zero_grad()
        F.cross_entropy(reference(x[idx]), y[idx]).backward()
        opt.step()
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b)


def test_tiny_study_returns_documented_keys_and_writes_pngs(tmp_path):
    """Two variants, a few steps on digits: the summary is JSON, each variant has the
    documented keys (one init gradient norm per layer, a loss curve), and both PNGs and the
    JSON file are written."""
    seen = []
    result = study.gradient_study(
        models=("plain20", "resnet20"), activations=("relu",), bns=(True,), dataset="digits",
        steps=6, batch_size=16, train_images=128, out_dir=tmp_path, progress=seen.append,
    )  # fmt: skip
    saved = json.loads((tmp_path / "gradient_study.json").read_text())
    assert json.loads(json.dumps(result, allow_nan=False)) == saved
    assert [v["model"] for v in result["variants"]] == ["plain20", "resnet20"]
    assert [v["model"] for v in seen] == ["plain20", "resnet20"]
    for v in result["variants"]:
        assert {"model", "activation", "bn", "first_last_grad_ratio", "grad_norms"} <= set(v)
        assert {"final_train_loss", "loss_curve", "diverged"} <= set(v)
        assert len(v["grad_norms"]) == 20 and v["first_last_grad_ratio"] > 0
        assert v["loss_curve"][-1][0] == 6 and not v["diverged"] and v["final_train_loss"] > 0
    assert result["steps"] == 6 and result["dataset"] == "digits" and "findings" in result
    for png in result["png"]:
        with Image.open(png) as img:
            img.verify()


def test_diverged_variant_is_reported_not_raised(tmp_path):
    """A learning rate far too high makes the loss non-finite: the variant is reported with
    diverged true and no final loss (JSON has no NaN), and the study finishes."""
    result = study.gradient_study(
        models=("plain20",), activations=("relu",), bns=(False,), dataset="digits",
        steps=8, batch_size=16, train_images=64, lr=1e6, out_dir=tmp_path,
    )  # fmt: skip
    (v,) = result["variants"]
    assert v["diverged"] and v["final_train_loss"] is None
    json.dumps(result, allow_nan=False)

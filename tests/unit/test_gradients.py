"""Gradient flow: per-layer norms equal autograd's own, in forward order; update ratios equal
the hand-computed SGD step; the model is left as it was; the vanishing gradient of a deep
plain sigmoid net shows on real digits; the run probe writes its PNG."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import neuralab
from neuralab import config, data
from neuralab.errors import UserError
from neuralab.probe import gradients as grad
from neuralab.train import fit, new_run_dir

pytestmark = pytest.mark.usefixtures("one_thread")


def small_resnet(**options) -> nn.Module:
    """A narrow resnet20 on 8x8 images, BatchNorm included: 20 weighted layers, fast."""
    torch.manual_seed(0)
    return neuralab.create_model("resnet20", image_size=8, widths=(4, 8, 8), **options)


def batch(n: int = 16, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_norms_equal_autograds_own():
    """Each layer's grad_norm is exactly the float64 norm of the .grad that a plain
    loss.backward() of the mean cross-entropy in train mode leaves (and equal to float32
    precision to p.grad.norm()); weight_norm is the weight's norm."""
    model, (x, y) = small_resnet(), batch()
    layers = grad.layer_gradient_norms(model, x, y)
    model.train()
    F.cross_entropy(model(x), y).backward()
    params = dict(model.named_parameters())
    assert len(layers) == 20
    for layer in layers:
        p = params[layer["name"]]
        assert layer["grad_norm"] == p.grad.double().norm().item() > 0
        assert layer["grad_norm"] == pytest.approx(p.grad.norm().item(), rel=1e-6)
        assert layer["weight_norm"] == pytest.approx(p.detach().norm().item(), rel=1e-6)


class DeclaredBackwards(nn.Module):
    """The head is declared before the layer that runs first."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8, 3)
        self.body = nn.Linear(4, 8)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


def test_layers_come_in_forward_order():
    """The order is that of the forward pass, not of declaration: the ResNet's stem conv
    first and its head last, and a model that declares its head first still lists it last.
    Biases and BatchNorm parameters (ndim < 2) are not weighted layers."""
    x, y = batch()
    names = [r["name"] for r in grad.layer_gradient_norms(small_resnet(), x, y)]
    assert names[0] == "stem.0.weight" and names[-1] == "head.weight"
    assert names[1:3] == ["stages.0.0.conv1.weight", "stages.0.0.conv2.weight"]
    torch.manual_seed(0)
    names = [
        r["name"] for r in grad.layer_gradient_norms(DeclaredBackwards(), x[:, 0, 0, :4], y % 3)
    ]
    assert names == ["body.weight", "head.weight"]


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_update_ratio_is_lr_times_gradient_over_weight(nesterov):
    """One SGD step from a fresh state moves W by lr * g (lr * (1 + momentum) * g with
    Nesterov), so the update/weight ratio is that times ||g|| / ||W||, layer by layer."""
    model, (x, y), lr = small_resnet(), batch(), 0.03
    norms = grad.layer_gradient_norms(model, x, y)
    ratios = grad.update_ratios(model, x, y, lr, "sgd", momentum=0.9, nesterov=nesterov)
    factor = lr * (1.9 if nesterov else 1.0)
    assert [r["name"] for r in ratios] == [r["name"] for r in norms]
    for r, n in zip(ratios, norms, strict=True):
        assert r["update_norm"] == pytest.approx(factor * n["grad_norm"], rel=1e-4)
        assert r["ratio"] == pytest.approx(factor * n["grad_norm"] / n["weight_norm"], rel=1e-4)


def test_adam_first_step_is_about_lr_per_weight():
    """The first Adam step is lr * g / (|g| + eps) per weight: ||dW|| ~ lr * sqrt(#weights)."""
    model, (x, y) = small_resnet(), batch()
    sizes = {n: p.numel() for n, p in model.named_parameters()}
    for r in grad.update_ratios(model, x, y, 1e-3, "adamw", weight_decay=0.0):
        assert r["update_norm"] == pytest.approx(1e-3 * math.sqrt(sizes[r["name"]]), rel=0.01)
    with pytest.raises(UserError, match="sgd, adamw"):
        grad.update_ratios(model, x, y, 1e-3, "rmsprop")


def test_model_is_left_untouched():
    """Neither function leaves a .grad, changes a weight or a BatchNorm running statistic
    (which a train-mode forward updates), or changes any submodule's train/eval flag."""
    model, (x, y) = small_resnet(), batch()
    model.eval()
    model.stages[1].train()  # a mixed state must come back as it was
    before = snapshot(model)
    modes = [m.training for m in model.modules()]
    grad.layer_gradient_norms(model, x, y)
    grad.update_ratios(model, x, y, 0.1, "sgd")
    assert all(p.grad is None for p in model.parameters())
    assert [m.training for m in model.modules()] == modes
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_plain_sigmoid_net_has_vanishing_gradient_on_digits():
    """On 64 real digits at initialisation, without BatchNorm: the first layer of a 56-layer
    plain sigmoid net gets a gradient tens of orders of magnitude below its head's. The
    post-activation ResNet keeps many orders more (its sigmoids sit after each addition, so
    they still squash the shortcut path, but half as often); the pre-activation ResNet, whose
    shortcut path has no sigmoid, and the ReLU ResNet get within a factor 100 of their
    head's: their gradients do not vanish."""
    x, y = data.load("digits", "train")
    x, y = x[:64], y[:64]
    mean, std = data.channel_stats(x)
    ratios = {}
    variants = ("plain56", "sigmoid"), ("resnet56", "sigmoid"), ("preresnet56", "sigmoid")
    for name, act in (*variants, ("resnet56", "relu")):
        torch.manual_seed(0)
        model = neuralab.create_model(
            name, activation=act, batchnorm=False, image_size=8, mean=mean, std=std
        )
        layers = grad.layer_gradient_norms(model, x, y)
        assert len(layers) == 56
        ratios[name, act] = layers[0]["grad_norm"] / layers[-1]["grad_norm"]
    assert ratios["plain56", "sigmoid"] < 1e-20
    assert ratios["resnet56", "sigmoid"] > 1e10 * ratios["plain56", "sigmoid"]
    assert 1e-2 < ratios["preresnet56", "sigmoid"] < 1e2
    assert 1e-2 < ratios["resnet56", "relu"] < 1e2


def test_gradient_flow_run_writes_png(tmp_path):
    """On a digits CNN trained for 20 steps, and on the same config at initialisation: the
    PNG lands in plots/, every layer has a gradient norm and an update ratio, and the
    first/last ratio is the first layer's norm over the head's."""
    cfg = config.load("digits_cnn", ["train.max_steps=20", "model.widths=8,16", "train.threads=1"])
    run_dir = new_run_dir(tmp_path / "run", cfg)
    fit(cfg, run_dir, progress=False)
    for which, png in (("best", "gradient_flow.png"), ("init", "gradient_flow_init.png")):
        summary = grad.gradient_flow_run(run_dir, which, n=64)
        json.dumps(summary, allow_nan=False)
        assert summary["png"] == str(run_dir / "plots" / png)
        with Image.open(summary["png"]) as img:
            img.verify()
        layers = summary["layers"]
        assert [r["name"] for r in layers][-1] == "head.weight" and len(layers) == 3
        assert all(r["grad_norm"] > 0 and r["update_ratio"] > 0 for r in layers)
        ratio = layers[0]["grad_norm"] / layers[-1]["grad_norm"]
        assert summary["first_last_grad_ratio"] == pytest.approx(ratio)
    with pytest.raises(UserError, match="best, last or init"):
        grad.gradient_flow_run(run_dir, "first")

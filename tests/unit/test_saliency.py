"""Saliency maps: closed-form oracles on float64 linear and quadratic models, completeness of
integrated gradients on a small CNN, SmoothGrad's limits, and the model left as it was."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from torch import nn

import neuralab
from neuralab import config, data
from neuralab.errors import UserError
from neuralab.probe import saliency as sal
from neuralab.train import fit, new_run_dir

SHAPE = (3, 4, 4)  # (C, H, W) of the hand-built models' images
PIXELS = 3 * 4 * 4
CLASSES = 5


pytestmark = pytest.mark.usefixtures("one_thread")


def linear_model(seed: int = 0) -> nn.Module:
    """f(x) = W vec(x) + b in float64: df_c/dx is row c of W, the oracle of every method."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(PIXELS, CLASSES)).double()


class Quadratic(nn.Module):
    """f_k(x) = sum_j A_kj x_j^2: its gradient is linear along any straight path, so the
    midpoint rule is exact and integrated gradients have the closed form A_cj (x_j^2 - x'_j^2)."""

    def __init__(self) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.randn(CLASSES, PIXELS, dtype=torch.float64))

    def forward(self, x):
        return (x.flatten(1) ** 2) @ self.A.T  # (B, CLASSES)


def small_cnn(dtype: torch.dtype = torch.float64) -> nn.Module:
    """The registry's CNN on 8x8 images, with BatchNorm shifted and scaled as training would
    leave it. At init (zero shifts, no conv biases) the CNN is positively homogeneous, so its
    gradient is constant on the path from a black image and integrated gradients would be
    exact whatever the steps: the shifts put ReLU kinks on the path."""
    torch.manual_seed(0)
    model = neuralab.create_model("cnn", widths=(4, 8), image_size=8).to(dtype)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.bias, 0, 0.5)
            nn.init.uniform_(module.weight, 0.5, 1.5)
            module.running_mean.normal_(0, 0.3)
            module.running_var.uniform_(0.5, 2.0)
    return model


def images(n: int = 6, shape: tuple[int, ...] = SHAPE, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_gradient_of_linear_model_is_its_weight_row():
    """Oracle: the vanilla gradient of a linear model is W[c] and gradient x input is x * W[c],
    for each image's own target class."""
    model, x = linear_model(), images()
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    rows = model[1].weight.detach()[y].view(x.shape)
    torch.testing.assert_close(sal.vanilla_gradient(model, x, y), rows, rtol=0, atol=1e-12)
    torch.testing.assert_close(sal.gradient_x_input(model, x, y), x * rows, rtol=0, atol=1e-12)


def test_integrated_gradients_of_linear_model_are_exact():
    """For a linear model the gradient is constant on the path, so IG is exact for any steps:
    with a black baseline it equals gradient x input, and with any baseline the attributions
    sum to f_c(x) - f_c(x') to 1e-9 (completeness gap ~0)."""
    model, x = linear_model(), images()
    torch.testing.assert_close(
        sal.integrated_gradients(model, x, target=2, steps=3),
        sal.gradient_x_input(model, x, target=2),
        rtol=0,
        atol=1e-12,
    )
    baseline = images(1, seed=7)[0]  # one (C, H, W) baseline for every image
    attributions = sal.integrated_gradients(model, x, target=2, baseline=baseline, steps=5)
    with torch.no_grad():
        delta = model(x)[:, 2] - model(baseline.expand_as(x))[:, 2]
    torch.testing.assert_close(attributions.flatten(1).sum(1), delta, rtol=0, atol=1e-9)
    assert sal.completeness_gap(model, x, attributions, 2, baseline).max() < 1e-9


def test_integrated_gradients_of_quadratic_model_match_closed_form():
    """Oracle per pixel: for f_c = sum_j A_cj x_j^2, IG_j = A_cj (x_j^2 - x'_j^2); the midpoint
    rule integrates the path's linear gradient exactly, here with a non-black baseline."""
    torch.manual_seed(0)
    model, x, baseline = Quadratic(), images(), images(6, seed=3)
    y = torch.tensor([4, 3, 2, 1, 0, 4])
    expected = model.A.detach()[y].view(x.shape) * (x**2 - baseline**2)
    got = sal.integrated_gradients(model, x, y, baseline=baseline, steps=4, batch_size=5)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_integrated_gradients_completeness_on_small_cnn():
    """On a ReLU CNN with kinks on the path, the default steps bring ``completeness_gap`` (the
    error of the attributions' sum, relative to their size) under 1%, and with more steps the
    sum is within 1% of f_c(x) - f_c(0) itself, which is small here: random features barely
    tell noise from black. Splitting the path into passes of any size changes nothing."""
    model, x = small_cnn(), images(4, (1, 8, 8))
    assert sal.completeness_gap(model, x, sal.integrated_gradients(model, x)).max() < 0.01
    with torch.no_grad():
        logits = model.eval()(x)
        c = logits.argmax(1, keepdim=True)
        delta = (logits.gather(1, c) - model(torch.zeros_like(x)).gather(1, c)).squeeze(1)
    fine = sal.integrated_gradients(model, x, steps=512)
    assert ((fine.flatten(1).sum(1) - delta).abs() < 0.01 * delta.abs()).all()
    few = sal.integrated_gradients(model, x, steps=8)
    torch.testing.assert_close(sal.integrated_gradients(model, x, steps=8, batch_size=3), few)
    assert sal.completeness_gap(model, x, few).max() > 1e-6  # the kinks are really there


def test_smoothgrad_limits_and_seed():
    """SmoothGrad with sigma 0 is the vanilla gradient and with a tiny sigma approaches it;
    the same generator seed gives bit-identical maps, another seed different ones."""
    model, x = small_cnn(), images(4, (1, 8, 8))
    grad = sal.vanilla_gradient(model, x)
    torch.testing.assert_close(sal.smoothgrad(model, x, samples=2, sigma=0.0), grad)
    torch.testing.assert_close(sal.smoothgrad(model, x, samples=4, sigma=1e-7), grad)

    def seeded(seed: int) -> torch.Tensor:
        return sal.smoothgrad(model, x, samples=5, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(seeded(0), seeded(0))
    assert not torch.equal(seeded(0), seeded(1))


@pytest.mark.parametrize("method", list(sal.METHODS))
def test_model_mode_statistics_gradients_and_input_are_left_alone(method):
    """A model in train mode stays in train mode (a frozen submodule stays in eval), BatchNorm
    keeps its running statistics, no parameter gets a .grad and the input is unchanged; the
    map is a detached CPU tensor shaped like the input."""
    model = small_cnn(torch.float32).train()
    model.stages[0].eval()  # a frozen part: its own mode must be restored too
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    x = images(3, (1, 8, 8)).float()
    x_before = x.clone()
    maps = sal.saliency(model, x, method)
    assert model.training and not model.stages[0].training and model.stages[1].training
    for key, value in model.state_dict().items():
        assert torch.equal(value, buffers[key]), key
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(x, x_before)
    assert maps.shape == x.shape and maps.device.type == "cpu" and not maps.requires_grad


def test_target_int_tensor_and_default():
    """One int targets every image, a (B,) tensor each image's own class, and no target the
    predicted class; a target of the wrong shape or class is a UserError."""
    model, x = linear_model(), images()
    w = model[1].weight.detach()
    assert torch.equal(sal.vanilla_gradient(model, x, 3), w[3].expand(6, -1).view(x.shape))
    y = torch.tensor([4, 0, 4, 1, 2, 2])
    assert torch.equal(sal.vanilla_gradient(model, x, y), w[y].view(x.shape))
    with torch.no_grad():
        pred = model(x).argmax(1)
    assert torch.equal(sal.vanilla_gradient(model, x), w[pred].view(x.shape))
    with pytest.raises(UserError, match="6 classes"):
        sal.vanilla_gradient(model, x, torch.tensor([0, 1]))
    with pytest.raises(UserError, match="0..4"):
        sal.vanilla_gradient(model, x, CLASSES)


def test_plot_saliency_writes_png(tmp_path):
    """The grid (image, heat map, overlay per row) is a PNG that PIL opens, for gray and RGB."""
    for channels in (1, 3):
        x = images(2, (channels, 8, 8)).float()
        maps = torch.randn_like(x)
        out = tmp_path / f"saliency_{channels}.png"
        digits = tuple(str(d) for d in range(10))
        sal.plot_saliency(x, maps, torch.tensor([1, 2]), torch.tensor([1, 3]), digits, out, "t")
        with Image.open(out) as img:
            img.verify()


def test_unknown_method_is_user_error():
    """An unknown method name is a UserError that lists the four choices."""
    with pytest.raises(UserError, match="grad, gradxinput, integrated-gradients, smoothgrad"):
        sal.saliency(linear_model(), images(), "lime")


def test_saliency_run_writes_png_and_json_summary(tmp_path):
    """On a run trained for two steps: the PNG lands in plots/, the summary is JSON-able with
    one label, prediction and completeness gap per image, and an out-of-range index is a
    UserError naming the valid range."""
    cfg = config.load(
        None,
        ["data.name=digits", "model.name=cnn", "model.widths=4,8", "train.max_steps=2"]
        + ["train.threads=1"],
    )
    run_dir = new_run_dir(tmp_path / "run", cfg)
    fit(cfg, run_dir, progress=False)
    summary = sal.saliency_run(run_dir, [0, 7], "integrated-gradients", which="last", steps=16)
    json.dumps(summary)
    assert summary["png"] == str(run_dir / "plots" / "saliency_integrated-gradients.png")
    with Image.open(summary["png"]) as img:
        img.verify()
    assert summary["indices"] == [0, 7] and len(summary["labels"]) == 2
    assert len(summary["predictions"]) == len(summary["completeness_gap"]) == 2
    last = len(data.load("digits", "test")[0]) - 1
    with pytest.raises(UserError, match=rf"0\.\.{last}\b"):
        sal.saliency_run(run_dir, [last + 1], "grad", which="last")

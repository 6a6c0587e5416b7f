"""Pre-training sanity checks: each passes on a good set-up and fails on the bug it targets."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from PIL import Image
from torch import nn

from neuralab import config, data
from neuralab.probe import checks
from neuralab.tasks import build_task
from neuralab.tasks.classify import build_image_model

NAMES = ["init_loss", "overfit_batch", "input_independent", "batch_independence", "input_picture"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup():
    """The good set-up: the digits preset with a tiny CNN, its task and its training split."""
    cfg = config.load("digits_cnn", ["model.widths=8,16"])
    spec = data.DATASETS.get("digits")
    x, y = data.load("digits", "train")
    torch.manual_seed(0)
    model = build_image_model(cfg, spec, x)
    return cfg, model, build_task(cfg), x, y


class ScaledLogits(nn.Module):
    """A model whose last layer is initialised 100x too large: over-confident at init."""

    def __init__(self, model: nn.Module, scale: float) -> None:
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x):
        return self.model(x) * self.scale


class InputBlind(nn.Module):
    """Trainable, but it feeds zeros to the real model: every image gets the same logits, so
    the best it can do on a batch of several classes is predict the label frequencies."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.zeros_like(x))


class BatchMixing(nn.Module):
    """Bugs that mix samples in eval mode too: a "normalisation" by the batch mean, or a
    flatten that transposes (B, D) before reshaping back to the batch."""

    def __init__(self, model: nn.Module, bug: str) -> None:
        super().__init__()
        self.model, self.bug = model, bug

    def forward(self, x):
        if self.bug == "batch_mean":
            x = x - x.mean(dim=0, keepdim=True)
        else:
            x = x.flatten(1).t().reshape(x.shape)  # (D, B) read as (B, C, H, W)
        return self.model(x)


def test_good_config_passes_every_check(setup, tmp_path):
    """The digits preset with a tiny CNN passes all five checks, in the documented order, and
    leaves torch's global RNG where it was."""
    cfg = setup[0]
    rng = torch.get_rng_state()
    results = checks.run_checks(cfg, tmp_path)
    assert [r.name for r in results] == NAMES
    assert all(r.passed for r in results), checks.format_results(results)
    assert all("\n" not in r.detail for r in results)
    assert torch.equal(torch.get_rng_state(), rng)
    table = checks.format_results(results)
    assert table.count("PASS") == 5 and table.endswith("5/5 checks passed")


def test_checks_leave_the_model_untouched(setup, tmp_path):
    """run_checks trains deep copies only: the model passed in keeps its weights, BatchNorm
    statistics and mode, and gets no parameter gradients."""
    cfg, model, _, _, _ = setup
    before = copy.deepcopy(model.state_dict())
    model.train()
    checks.run_checks(cfg, tmp_path, model=model)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training and all(p.grad is None for p in model.parameters())


def test_init_loss_fails_for_overconfident_logits(setup):
    """Logits 100x too large give a loss far above ln(10) at init: init_loss fails."""
    _, model, task, x, y = setup
    good = checks.check_init_loss(model, task, x[:64], y[:64])
    bad = checks.check_init_loss(ScaledLogits(model, 100.0), task, x[:64], y[:64])
    assert good.passed and abs(good.value - math.log(10)) < 0.2
    assert not bad.passed and bad.value > 2 * math.log(10)


def test_input_independent_fails_with_shuffled_labels(setup, tmp_path):
    """Labels permuted against the images (a data-pipeline bug): the real images predict held-out
    labels no better than zeros, so input_independent fails, while the other checks, which do
    not look at whether labels fit images, still pass."""
    cfg, _, _, _, y = setup
    shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))]
    results = {r.name: r for r in checks.run_checks(cfg, tmp_path, y=shuffled)}
    assert not results["input_independent"].passed
    assert "zeros" in results["input_independent"].detail
    assert results["input_independent"].value < 0.1 * math.log(10)
    assert all(r.passed for name, r in results.items() if name != "input_independent")


@pytest.mark.parametrize("bug", ["batch_mean", "transposed_flatten"])
def test_batch_independence_fails_when_samples_mix(setup, bug):
    """A model that mixes samples in eval mode leaks sample 2's loss gradient onto the others;
    the good CNN, whose BatchNorm couples samples only in train mode, does not."""
    _, model, _, x, y = setup
    assert checks.check_batch_independence(model, x[:8], y[:8]).value == 0.0
    result = checks.check_batch_independence(BatchMixing(model, bug), x[:8], y[:8])
    assert not result.passed and result.value > 0
    assert "mixed" in result.detail


@pytest.mark.parametrize("broken", ["input_blind", "frozen"])
def test_overfit_batch_fails_for_a_model_that_cannot_learn(setup, broken):
    """A model blind to its input gives all 16 images the same logits, so its loss cannot go
    below the entropy of the batch's labels (several classes, > 1 nat); a model with every
    parameter frozen cannot change at all. Both fail; the good model passes."""
    _, model, task, x, y = setup
    assert checks.check_overfit_batch(model, task, x[:16], y[:16]).passed
    if broken == "input_blind":
        bad = InputBlind(model)
    else:
        bad = copy.deepcopy(model).requires_grad_(False)
    result = checks.check_overfit_batch(bad, task, x[:16], y[:16])
    assert not result.passed and result.value > 1.0
    if broken == "frozen":
        assert "no trainable parameters" in result.detail


def test_overfit_floor_accounts_for_label_smoothing():
    """With label smoothing the lowest reachable loss is the entropy of the smoothed target,
    not 0: the floor matches cross-entropy at the optimum logits log(target)."""
    target = torch.full((10,), 0.01)
    target[3] = 0.91
    best = torch.nn.functional.cross_entropy(
        target.log()[None], torch.tensor([3]), label_smoothing=0.1
    )
    assert checks.smoothed_loss_floor(10, 0.1) == pytest.approx(best.item(), abs=1e-6)
    assert checks.smoothed_loss_floor(10, 0.0) == 0.0


def test_input_picture_is_a_png_with_the_value_range(setup, tmp_path):
    """The picture is a valid PNG and the result states the value range; images outside
    [0, 1] (e.g. pixel values 0..255 that were never scaled) fail."""
    _, _, _, x, y = setup
    classes = data.DATASETS.get("digits").classes
    good = checks.check_input_picture(x[:32], y[:32], classes, tmp_path / "good.png")
    with Image.open(tmp_path / "good.png") as img:
        assert img.format == "PNG" and img.width > 100
    assert good.passed and "[0.00, 1.00]" in good.detail and "1x8x8" in good.detail
    bad = checks.check_input_picture(x[:32] * 255, y[:32], classes, tmp_path / "bad.png")
    assert not bad.passed and "255.00" in bad.detail and (tmp_path / "bad.png").is_file()


# ---- text runs ----------------------------------------------------------------------------

TEXT_NAMES = ["init_loss", "overfit_batch", "input_independent", "batch_independence"]


@pytest.fixture
def text_cfg(tmp_path):
    """A small GPT on a text whose characters follow each other predictably."""
    words = "the cat sat on the mat and the dog dug in the fog by the log".split()
    rng = torch.Generator().manual_seed(0)
    text = " ".join(words[i] for i in torch.randint(len(words), (3000,), generator=rng).tolist())
    (tmp_path / "t.txt").write_text(text)
    return config.load(
        "shakespeare_gpt_fast",
        [
            f"data.path={tmp_path / 't.txt'}",
            "model.n_layer=1",
            "model.d_model=32",
            "model.n_heads=2",
            "model.block_size=32",
        ],
    )


def test_text_run_passes_the_language_model_checks(text_cfg, tmp_path):
    """On a text run the checks take their language-model form and all pass: loss at init
    near ln(vocabulary), one window memorised, real text beats zero token ids, windows are
    independent, and the decoded first windows have targets shifted by one character."""
    results = checks.run_checks(text_cfg, tmp_path)
    assert [r.name for r in results] == [*TEXT_NAMES, "input_text"]
    assert all(r.passed for r in results), checks.format_results(results)
    vocab = len(set((tmp_path / "t.txt").read_text()))
    assert f"ln({vocab})" in results[0].detail
    lines = (tmp_path / "check_inputs.txt").read_text().splitlines()
    assert lines[0].startswith("input  0: '") and lines[1].startswith("target 0: '")


def test_token_batch_independence_fails_when_windows_mix(text_cfg):
    """A language model that adds the batch mean of its embeddings mixes windows: changing
    the other windows changes window 0's logits, and the check says so."""
    from neuralab.tasks.language_model import build_language_model

    torch.manual_seed(0)
    model = build_language_model(text_cfg, 20)
    embed = model.wte.forward
    model.wte.forward = lambda idx: embed(idx) + embed(idx).mean(dim=0, keepdim=True)
    x = torch.randint(0, 20, (4, 16))
    result = checks.check_batch_independence_tokens(model, x)
    assert not result.passed and "mixed across the batch" in result.detail

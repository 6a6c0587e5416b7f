"""Sanity checks to run before a long training run, from Karpathy's "A Recipe for Training
Neural Networks" (2019, karpathy.github.io/2019/04/25/recipe): each catches, in seconds, a bug
that would otherwise cost a whole run and only show up as "it trains a bit worse".

1. ``init_loss``: at initialisation a classifier should be unsure, so its cross-entropy is
   about ln(num_classes). Much more means a bad init (over-confident logits); the first steps
   of training are then spent shrinking the logits (the "hockey stick" loss curve).
2. ``overfit_batch``: a fresh copy trained on one small batch must reach the lowest loss the
   loss allows. If it cannot even memorise 16 images, the model, loss or optimiser is broken.
3. ``input_independent``: a model trained on the real images must beat one trained on zeros.
   If it does not, the model does not use its input, or the labels do not belong to the
   images (a shuffled or misaligned data pipeline).
4. ``batch_independence``: the loss of sample i must have zero gradient with respect to every
   other sample of the batch. A ``view``/``transpose`` across the batch dimension, or a
   normalisation over the batch, breaks it.
5. ``input_picture``: a PNG of the exact tensors that enter the model on the first training
   step, after augmentation, with their labels: "visualise just before the net".

A text run gets the same checks in their language-model form: ln(vocabulary size) at init;
memorising one window; real text against all-zero token ids; batch independence by
changing the other windows (token ids have no gradient); and ``input_text``, the first
windows decoded back to text with their targets, which must be the inputs shifted by one.

The checks see the loss the loop trains on (``task.loss``), the model the loop builds from
the config and the data the loop loads. They never change the model passed in (training
checks train deep copies) and leave torch's global RNG as they found it.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuralab import data
from neuralab.config import RunConfig
from neuralab.data.batches import RandomWindows
from neuralab.errors import UserError
from neuralab.plots import save_figure, subplots
from neuralab.seed import derived_generator
from neuralab.tasks import ClassifyTask, build_task
from neuralab.tasks.classify import build_image_model
from neuralab.tasks.language_model import build_language_model
from neuralab.train.steps import train_steps

INIT_TOLERANCE = 0.25  # init_loss passes if |loss - ln C| < INIT_TOLERANCE * ln C
OVERFIT_TOLERANCE = 0.05  # overfit_batch passes once loss - (lowest possible loss) < this
INPUT_MARGIN = 0.1  # input_independent passes if zero-input loss - real loss > this * ln C
LR = 3e-3  # Adam for the training checks: a safe default, so a failure is not the config's lr


@dataclass
class CheckResult:
    """The verdict of one check; ``value`` is the number the verdict was based on."""

    name: str
    passed: bool
    detail: str  # one line: what was measured, and why it passes or fails
    value: float | None = None


def _train(
    model: nn.Module,
    task: ClassifyTask,
    x: Tensor,
    y: Tensor,
    steps: int,
    batch_size: int,
    seed: int,
) -> None:
    """Adam on random minibatches of (x, y) for ``steps`` steps, in train mode, in place.

    The minibatches come from ``derived_generator(seed, ...)``, so two calls with the same
    seed see the same batches (input_independent compares two models on equal terms).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:  # nothing can learn: the checks then measure the untrained model
        return
    optimizer = torch.optim.Adam(params, lr=LR)
    gen = derived_generator(seed, 0, 2)  # a key of its own: not the loop's (seed, step, 1)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(x), (min(batch_size, len(x)),), generator=gen)
        loss, _ = task.loss(model, x[idx], y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def smoothed_loss_floor(num_classes: int, label_smoothing: float) -> float:
    """The lowest cross-entropy with label smoothing eps: the entropy of the smoothed target,
    which puts 1 - eps + eps/C on the true class and eps/C on each other one (0 for eps 0)."""
    if label_smoothing == 0:
        return 0.0
    other = label_smoothing / num_classes
    true = 1 - label_smoothing + other
    return -(true * math.log(true) + (num_classes - 1) * other * math.log(other))


def _eval_mode_loss(
    model: nn.Module, task: ClassifyTask, x: Tensor, y: Tensor
) -> tuple[float, float]:
    """(task loss, accuracy) of ``model`` on (x, y) in eval mode; the mode is restored."""
    was_training = model.training
    model.eval()
    try:
        loss, stats = task.loss(model, x, y)  # no no_grad: an adversarial task attacks here
    finally:
        model.train(was_training)
    return loss.item(), stats["correct"].item() / stats["count"].item()


def check_init_loss(model: nn.Module, task: ClassifyTask, x: Tensor, y: Tensor) -> CheckResult:
    """Loss of the untrained model on (x, y) against ln(C), the loss of a uniform guess.

    Measured in eval mode (dropout off, BatchNorm on its running statistics), so the number
    does not depend on dropout masks or on which images share the batch. Label smoothing
    leaves the loss of a uniform guess at exactly ln(C).
    """
    loss, _ = _eval_mode_loss(model, task, x, y)
    expected = math.log(task.num_classes)
    passed = abs(loss - expected) < INIT_TOLERANCE * expected
    why = "" if passed else f"; outside +-{INIT_TOLERANCE:.0%}: check the init of the last layer"
    detail = f"loss at init {loss:.2f} vs ln({task.num_classes}) = {expected:.2f} (eval mode){why}"
    return CheckResult("init_loss", passed, detail, loss)


def check_overfit_batch(
    model: nn.Module, task: ClassifyTask, x: Tensor, y: Tensor, steps: int = 200
) -> CheckResult:
    """Train a copy on the one batch (x, y), whole-batch steps without augmentation, until
    its loss is within ``OVERFIT_TOLERANCE`` of the lowest possible loss and every image is
    classified right.

    Trained in train mode, as the loop does; judged every 10 steps in eval mode, because
    dropout in train mode keeps the loss of even a perfectly memorised batch above its floor.
    The floor is the entropy of the label-smoothed target: 0 without label smoothing.
    """
    model = copy.deepcopy(model)
    params = [p for p in model.parameters() if p.requires_grad]
    floor = smoothed_loss_floor(task.num_classes, task.label_smoothing)
    seen: dict[str, Any] = {}

    def judge(step: int, *_: Any) -> bool:
        """Every 10 steps and at the end, in eval mode: memorised yet? (True stops training)"""
        if step % 10 and step != steps:
            return False
        loss, acc = _eval_mode_loss(model, task, x, y)
        seen.update(step=step, loss=loss, acc=acc)
        return loss - floor < OVERFIT_TOLERANCE and acc == 1.0

    if not judge(0) and params:
        optimizer = torch.optim.Adam(params, lr=LR)
        train_steps(model, task.loss, lambda _: (x, y), optimizer, steps, after_step=judge)
    step, loss, acc = seen["step"], seen["loss"], seen["acc"]
    summary = f"loss {loss:.3f} (floor {floor:.3f}), acc {acc:.0%} on {len(y)} examples"
    if loss - floor < OVERFIT_TOLERANCE and acc == 1.0:
        return CheckResult("overfit_batch", True, f"{summary} after {step} steps", loss)
    why = "cannot memorise it" if params else "the model has no trainable parameters"
    detail = f"{summary} after {step} steps of Adam lr {LR:g}: {why}"
    return CheckResult("overfit_batch", False, detail, loss)


def check_input_independent(
    model: nn.Module,
    task: ClassifyTask,
    x: Tensor,
    y: Tensor,
    steps: int = 150,
    batch_size: int = 32,
    seed: int = 0,
) -> CheckResult:
    """Train one copy on the images and one on all-zero images, the same steps on the same
    batches; both are scored on a held-out quarter of (x, y) that neither trained on.

    Held out, memorising labels cannot help: the real-input copy wins only if the images
    predict the labels. The zero-input copy can learn just the label frequencies, so its loss
    is about their entropy. Passes if the real loss is lower by more than INPUT_MARGIN * ln C.
    """
    held = len(x) // 4
    if held < 8:
        raise UserError(f"input_independent needs at least 32 images, got {len(x)}")
    x_fit, y_fit, x_held, y_held = x[:-held], y[:-held], x[-held:], y[-held:]
    losses = []
    for inputs_fit, inputs_held in ((x_fit, x_held), (x_fit * 0, x_held * 0)):
        trained = copy.deepcopy(model)
        _train(trained, task, inputs_fit, y_fit, steps, batch_size, seed)
        losses.append(task.evaluate(trained, inputs_held, y_held, len(y_held))["loss"])
    real, zero = losses
    gap = zero - real
    passed = gap > INPUT_MARGIN * math.log(task.num_classes)
    why = "" if passed else ": the model gets nothing from its input (labels shuffled?)"
    detail = (
        f"held-out loss {real:.2f} with the images vs {zero:.2f} with zeros "
        f"({len(y_fit)} trained, {held} held out, {steps} steps){why}"
    )
    return CheckResult("input_independent", passed, detail, gap)


def check_batch_independence(model: nn.Module, x: Tensor, y: Tensor, i: int = 2) -> CheckResult:
    """Backpropagate the loss of sample i alone to the whole input batch: the gradient on
    every other sample must be exactly zero, and nonzero on sample i.

    Runs in eval mode: in train mode BatchNorm normalises by batch statistics, which couples
    the samples by design (Ioffe & Szegedy 2015); a model must not mix samples at inference.
    Uses ``torch.autograd.grad``, so no parameter gradient is left behind.
    """
    if len(x) <= i:
        raise UserError(f"batch_independence needs more than {i} images, got {len(x)}")
    was_training = model.training
    model.eval()
    try:
        x = x.detach().clone().requires_grad_(True)
        loss_i = F.cross_entropy(model(x)[i : i + 1], y[i : i + 1])  # the loss of sample i only
        (grad,) = torch.autograd.grad(loss_i, x)
    finally:
        model.train(was_training)
    per_sample = grad.abs().flatten(1).amax(dim=1)  # (B,) max |d loss_i / d x_j|
    others = torch.cat([per_sample[:i], per_sample[i + 1 :]]).max().item()
    own = per_sample[i].item()
    passed = others == 0.0 and own > 0.0
    if others != 0.0:
        why = ": samples are mixed across the batch"
    elif own == 0.0:
        why = f": the loss of sample {i} does not depend on its own input"
    else:
        why = ""
    detail = (
        f"max |dloss_{i}/dx_j| = {others:.2g} for j != {i} ({own:.2g} for j = {i}); "
        f"eval mode, as train-mode BatchNorm couples samples by design{why}"
    )
    return CheckResult("batch_independence", passed, detail, others)


def check_batch_independence_tokens(model: nn.Module, x: Tensor, i: int = 0) -> CheckResult:
    """The token-id form of batch independence: replace every window but window i by other
    tokens; window i's logits must not change at all (eval mode)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            before = model(x)[0][i]
            other = (x + 1) % model.config.vocab_size
            other[i] = x[i]
            after = model(other)[0][i]
    finally:
        model.train(was_training)
    change = (after - before).abs().max().item()
    passed = change == 0.0
    why = "" if passed else ": windows are mixed across the batch"
    detail = f"max change of window {i}'s logits when the other windows change: {change:.2g}{why}"
    return CheckResult("batch_independence", passed, detail, change)


def check_input_text(
    x: Tensor, y: Tensor, tokenizer: data.CharTokenizer, out: Path, rows: int = 8
) -> CheckResult:
    """Write the first ``rows`` training windows decoded back to text, with their targets, to
    ``out``. Passes if every target is the input shifted by one character."""
    lines = []
    for k in range(min(rows, len(x))):
        lines.append(f"input  {k}: {tokenizer.decode(x[k])!r}")
        lines.append(f"target {k}: {tokenizer.decode(y[k])!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    shifted = bool((x[:, 1:] == y[:, :-1]).all())
    why = "" if shifted else ": targets are not the inputs shifted by one token"
    detail = f"{min(rows, len(x))} windows of {x.shape[1]} characters in {out}{why}"
    return CheckResult("input_text", shifted, detail)


def check_input_picture(
    x: Tensor,
    y: Tensor,
    classes: tuple[str, ...],
    out: Path,
    title: str = "model inputs",
    rows: int = 4,
    cols: int = 8,
) -> CheckResult:
    """Save a rows x cols grid of the images ``x`` exactly as given, titled with their labels,
    and ``title`` with their value range and shape. Passes if the file was written and every
    value is in [0, 1], the range images enter neuralab models in (normalisation is a layer
    inside the model)."""
    n = min(len(x), rows * cols)
    lo, hi = x.min().item(), x.max().item()
    shape = "x".join(str(s) for s in x.shape[1:])
    fig, axes = subplots(rows, cols, figsize=(1.3 * cols, 1.5 * rows + 0.4), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        img = x[k].detach().float().permute(1, 2, 0).numpy()  # (H, W, C)
        if img.shape[2] == 1:
            ax.imshow(img[:, :, 0], cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(img.clip(0, 1))
        ax.set_title(classes[y[k]], fontsize=8)
    fig.suptitle(f"{title}: min {lo:.2f} max {hi:.2f}, shape {shape}", fontsize=10)
    save_figure(fig, out)
    passed = out.is_file() and lo >= 0.0 and hi <= 1.0
    why = "" if lo >= 0.0 and hi <= 1.0 else ": images must enter the model in [0, 1]"
    detail = f"{n} images in {out}, values in [{lo:.2f}, {hi:.2f}], shape {shape}{why}"
    return CheckResult("input_picture", passed, detail)


def run_checks(
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    model: nn.Module | None = None,
    x: Tensor | None = None,
    y: Tensor | None = None,
) -> list[CheckResult]:
    """Run the five checks on the model, task and training data of ``cfg``, in order.

    ``model`` replaces the configured model, ``x``/``y`` the training split (a missing one is
    loaded). The images are taken in the run's first-epoch order, so the picture shows the
    first training batch exactly as the loop will build it, augmentation included. Saves
    ``out_dir / "check_inputs.png"``.
    """
    if data.is_text(cfg.data):
        return _run_text_checks(cfg, Path(out_dir))
    spec = data.DATASETS.get(cfg.data.name)
    if x is None or y is None:
        x_train, y_train = data.load_split(cfg.data, "train")
        x = x_train if x is None else x
        y = y_train if y is None else y
    if len(x) != len(y):
        raise UserError(f"{len(x)} images but {len(y)} labels")
    task = build_task(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # as the loop seeds before building: the same init
        if model is None:
            model = build_image_model(cfg, spec, x)
        order = torch.randperm(len(x), generator=derived_generator(cfg.seed, 0))  # epoch 0
        x, y = x[order], y[order]
        results = [
            check_init_loss(model, task, x[:64], y[:64]),
            check_overfit_batch(model, task, x[:16], y[:16]),
            check_input_independent(model, task, x[:512], y[:512], seed=cfg.seed),
            check_batch_independence(model, x[:8], y[:8]),
        ]
    first = x[: min(cfg.train.batch_size, len(x))]
    title = "first training batch"
    if cfg.data.augment:
        gen = derived_generator(cfg.seed, 0, 1)  # the loop's augmentation of step 0
        first = data.augment(first, generator=gen, crop_pad=spec.crop_pad, hflip=spec.hflip)
        title += ", augmented"
    out = Path(out_dir) / "check_inputs.png"
    results.append(check_input_picture(first, y, spec.classes, out, title))
    return results


def _run_text_checks(cfg: RunConfig, out_dir: Path) -> list[CheckResult]:
    """The checks of a text run, on windows of its training text."""
    tokenizer, splits = data.load_token_splits(cfg.data)
    task = build_task(cfg)
    task.num_classes = tokenizer.vocab_size
    task.carry = False  # the checks read windows, not streams
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_language_model(cfg, tokenizer.vocab_size)
        windows = RandomWindows(splits["train"], 512, model.config.block_size, cfg.seed)
        x, y = windows.get(0)[:2]
        results = [
            check_init_loss(model, task, x[:64], y[:64]),
            check_overfit_batch(model, task, x[:1], y[:1]),
            check_input_independent(model, task, x, y, seed=cfg.seed),
            check_batch_independence_tokens(model, x[:8]),
        ]
    results.append(check_input_text(x, y, tokenizer, out_dir / "check_inputs.txt"))
    return results


def format_results(results: list[CheckResult]) -> str:
    """A compact table for the terminal: name, PASS/FAIL, detail; then a count of passes."""
    width = max(len(r.name) for r in results)
    lines = [f"{r.name:<{width}}  {'PASS' if r.passed else 'FAIL'}  {r.detail}" for r in results]
    passed = sum(r.passed for r in results)
    lines.append(f"{passed}/{len(results)} checks passed")
    return "\n".join(lines)

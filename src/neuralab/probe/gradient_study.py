"""He et al. 2016 ("Deep Residual Learning", Fig. 1 and §4.2) in miniature, on real images:
why a deep residual net trains where a deep plain net does not.

Plain nets and ResNets of 20 and 56 layers (and by default the pre-activation ResNet-56 of
He et al. 2016b, whose shortcut path has no activation on it), sigmoid or ReLU, with or
without BatchNorm (Ioffe & Szegedy 2015): the per-layer gradient norms at initialisation
(``neuralab.probe.gradients``), then a short training run of each with the same seed, data
order and optimizer, whose training-loss curves are overlaid. ``_findings`` checks the two
classic claims on the result: the deep plain net's first layer gets a vanishing share of its
head's gradient and its residual twins' do not; and the deeper plain net trains worse than
the shallower one (the degradation problem) while the deeper ResNet trains no worse.

The defaults: 4096 Fashion-MNIST training images (a seeded subset), the init gradient norms
averaged over GRAD_BATCHES batches of 64; then 200 steps of batch 64 of SGD, momentum 0.9,
lr 0.01 warmed up over the first 10% of the steps and cosine-decayed to 0 (Loshchilov &
Hutter 2017), the same batches for every variant; the final loss is the mean over the last
10% of the steps. He et al. trained at lr 0.1, but in so short a budget that rate favours
the shallower nets. Training backpropagates the loss times LOSS_SCALE and divides SGD's rate
by it, which makes the same steps (see ``neuralab.probe.gradients``).

What the study measures with these defaults, and what it shows, is in the README ("The
vanishing-gradient study"); ``gradient_study.json`` holds every figure of a run of it.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuralab import data
from neuralab.errors import UserError
from neuralab.models import create_model
from neuralab.plots import save_figure, subplots
from neuralab.probe.gradients import (
    LOSS_SCALE,
    float64_norm,
    for_log_axis,
    layer_gradient_norms,
    loss_in_forward_order,
    ratio_or_none,
)
from neuralab.seed import derived_generator
from neuralab.train.steps import train_steps

VANISHED = 0.01  # a first layer with < 1% of the head's gradient norm: a vanishing gradient
LEARNED = 0.95  # a net whose final loss is below 95% of ln(classes) has learned something
DEFAULT_MODELS = ("plain20", "resnet20", "plain56", "resnet56", "preresnet56")
DEFAULT_ACTIVATIONS = ("sigmoid", "relu")
DEFAULT_BNS = (True, False)
DEFAULT_DATASET = "fashion-mnist"
DEFAULT_STEPS = 200
DEFAULT_BATCH = 64
DEFAULT_LR = 0.01
DEFAULT_TRAIN_IMAGES = 4096
GRAD_BATCHES = 4  # batches the init gradient norms are averaged over
WARMUP = 0.1  # fraction of the steps with a linear warm-up of the learning rate


def _variant_name(v: dict[str, Any]) -> str:
    return f"{v['model']} {v['activation']} {'BN' if v['bn'] else 'no BN'}"


def _batches(n: int, batch_size: int, steps: int, seed: int) -> list[Tensor]:
    """Index batches of range(n) for ``steps`` steps: a fresh seeded permutation per epoch,
    the last partial batch dropped. The same list for every variant: the same data order."""
    batch_size = min(batch_size, n)
    per_epoch = n // batch_size
    out: list[Tensor] = []
    epoch = 0
    while len(out) < steps:
        perm = torch.randperm(n, generator=derived_generator(seed, epoch, 5))
        out += list(perm[: per_epoch * batch_size].split(batch_size))
        epoch += 1
    return out[:steps]


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``.

    The schedule of ``neuralab.train.optim.lr_factor`` (cosine, min_lr 0), but not its
    floats: that one rounds pi * (k / n) where this rounds pi * k / n, and has no warm-up step
    below 10 steps where this has one. Sharing it would move the study's learning rates by an
    ulp at some steps, and chaotic variants (deep nets without BatchNorm) end elsewhere."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _train(
    model: nn.Module, x: Tensor, y: Tensor, batches: list[Tensor], lr: float, log_every: int
) -> tuple[list[list[float]], list[list[float | None]], float | None]:
    """SGD with momentum 0.9 on the batches, lr warmed up linearly over the first WARMUP of
    the steps. Returns (loss curve: [step, mean loss of the last log_every steps], first/last
    gradient-norm ratio at those steps, the final loss: the mean of the last 10% of the steps;
    None if the loss became non-finite, where training stops)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)  # linear in the gradient:
    warmup = max(1, int(WARMUP * len(batches)))
    losses: list[float] = []
    curve: list[list[float]] = []
    ratios: list[list[float | None]] = []

    def log(done: int, loss: Tensor, layers) -> None:
        losses.append(loss.item())
        if done % log_every == 0 or done == len(batches):
            window = losses[-log_every:]
            curve.append([done, sum(window) / len(window)])
            first, last = layers[0][1].grad, layers[-1][1].grad
            ratios.append([done, ratio_or_none(float64_norm(first), float64_norm(last))])

    done = train_steps(
        model,
        loss_in_forward_order,
        lambda step: (x[batches[step]], y[batches[step]]),
        opt,
        len(batches),
        lr_at=lambda step: lr * _lr_factor(step, len(batches), warmup) / LOSS_SCALE,
        loss_scale=LOSS_SCALE,  # ... scaled gradients and rate make the same step
        after_step=log,
    )
    if done.diverged:
        return curve, ratios, None
    tail = losses[-max(1, len(losses) // 10) :]
    return curve, ratios, sum(tail) / len(tail)


def _family(model: str) -> str:
    """'plain', 'resnet' or 'preresnet': the model's name without its depth."""
    return model.rstrip("0123456789")


def _depth(model: str) -> int:
    """20 for plain20, resnet20 or preresnet20."""
    return int(model.removeprefix(_family(model)))


def _findings(variants: list[dict[str, Any]], num_classes: int) -> list[dict[str, Any]]:
    """The classic results, checked in each (activation, BN) setting that has the variants:
    the deepest plain net's first layer gets < VANISHED of its head's gradient norm at init
    and its residual twins' (resnet, preresnet) do not; the deeper plain net ends training with
    a higher loss than the shallower one, the deeper residual net with no higher (He et al.
    2016, Fig. 1). A diverged net counts as the worse; ``holds`` is None where nothing can be
    told: a ratio that is undefined, or two nets neither of which learned (final loss above
    LEARNED x the loss of chance, ln C), whose order is noise."""
    found: list[dict[str, Any]] = []
    by_key = {(v["model"], v["activation"], v["bn"]): v for v in variants}
    depths = sorted({_depth(v["model"]) for v in variants})
    shallow, deep = depths[0], depths[-1]
    families = list(dict.fromkeys(_family(v["model"]) for v in variants))
    for act, bn in dict.fromkeys((v["activation"], v["bn"]) for v in variants):
        for kind in families:
            op = "<" if kind == "plain" else ">="
            if v := by_key.get((f"{kind}{deep}", act, bn)):
                r = v["first_last_grad_ratio"]
                holds = None if r is None else (r < VANISHED) == (kind == "plain")
                claim = f"{kind}{deep}: first-layer gradient {op} {VANISHED:g} x the head's"
                found.append(dict(claim=claim, activation=act, bn=bn, value=r, holds=holds))
        for kind in families:
            sign = "worse than" if kind == "plain" else "at least as well as"
            a, b = by_key.get((f"{kind}{shallow}", act, bn)), by_key.get((f"{kind}{deep}", act, bn))
            if shallow == deep or not (a and b):
                continue
            la, lb = (math.inf if v["diverged"] else v["final_train_loss"] for v in (a, b))
            holds = lb > la if kind == "plain" else lb <= la
            if min(la, lb) > LEARNED * math.log(num_classes):
                holds = None
            claim = f"{kind}{deep} trains {sign} {kind}{shallow}"
            la, lb = a["final_train_loss"], b["final_train_loss"]
            found.append(dict(claim=claim, activation=act, bn=bn, shallow=la, deep=lb, holds=holds))
    return found


_COLORS = {"plain20": "tab:orange", "plain56": "tab:red", "resnet20": "tab:cyan", "resnet56": "b"}
_COLORS |= {"preresnet20": "tab:olive", "preresnet56": "tab:green"}


def _study_plot(variants: list[dict[str, Any]], key: str, out: Path, ylabel: str) -> Path:
    """One panel per activation; a line per variant (colour: model, solid: BN, dashed: not)."""
    acts = list(dict.fromkeys(v["activation"] for v in variants))
    fig, axes = subplots(1, len(acts), figsize=(5.5 * len(acts), 4.2), squeeze=False)
    for ax, act in zip(axes[0], acts, strict=True):
        for v in (v for v in variants if v["activation"] == act):
            color = _COLORS.get(v["model"], "tab:blue")
            label = _variant_name(v) + (" (diverged)" if v["diverged"] else "")
            style = dict(color=color, ls="-" if v["bn"] else "--", label=label)
            if key == "grad_norms":
                ax.semilogy(for_log_axis(v["grad_norms"]), marker=".", ms=3, **style)
            else:
                steps, losses = zip(*v["loss_curve"], strict=True) if v["loss_curve"] else ((), ())
                ax.plot(steps, losses, **style)
        xlabel = "layer (0: first conv, last: head)" if key == "grad_norms" else "step"
        ax.set(xlabel=xlabel, ylabel=ylabel, title=act)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    return save_figure(fig, out)


def gradient_study(
    models: Sequence[str] = DEFAULT_MODELS,
    activations: Sequence[str] = DEFAULT_ACTIVATIONS,
    bns: Sequence[bool] = DEFAULT_BNS,
    dataset: str = DEFAULT_DATASET,
    steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH,
    lr: float = DEFAULT_LR,
    train_images: int = DEFAULT_TRAIN_IMAGES,
    image_size: int | None = None,
    seed: int = 0,
    out_dir: str | Path = "gradient_study",
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """He et al. 2016, Fig. 1 in miniature: each (model, activation, BatchNorm) variant's
    per-layer gradient norms at initialisation, averaged over GRAD_BATCHES training batches,
    then ``steps`` steps of training on ``train_images`` images of ``dataset``'s train split.

    Every variant starts from ``seed`` and sees the same batches with the same optimizer.
    ``image_size`` below the dataset's averages the images down (28 -> 14 is 4x cheaper).
    ``progress`` gets each variant's summary as it finishes. Writes ``gradient_norms.png``,
    ``gradient_study_loss.png`` and ``gradient_study.json`` to ``out_dir``; returns that JSON:
    {"dataset", "steps", ..., "variants": [{"model", "activation", "bn",
    "first_last_grad_ratio", "grad_norms" (at init, per layer, first first), "layers" (their
    names), "final_train_loss", "diverged", "loss_curve" ([step, mean loss] pairs),
    "grad_ratio_curve" ([step, first/last ratio] along training), "seconds"}, ...],
    "findings" (see ``_findings``), "png", "json", "seconds"}. A diverged variant (non-finite
    loss) has ``final_train_loss`` None and ``diverged`` true; a ratio is None if undefined.
    """
    started = time.perf_counter()
    if steps < 1 or batch_size < 1 or train_images < 1 or lr <= 0:
        raise UserError("steps, batch_size, train_images and lr must be positive")
    if not (models and activations and bns):
        raise UserError("the gradient study needs at least one model, activation and BN setting")
    for name in models:
        if _family(name) not in ("plain", "resnet", "preresnet"):
            raise UserError(
                f"the gradient study compares plain, resnet and preresnet models, got {name!r}"
            )
    spec = data.DATASETS.get(dataset)
    x_all, y_all = data.load(dataset, "train")
    keep = torch.randperm(len(x_all), generator=derived_generator(seed, 0, 6))[:train_images]
    x, y = x_all[keep], y_all[keep]
    if image_size and image_size < spec.height:
        x = F.adaptive_avg_pool2d(x, image_size)  # (N, C, S, S): 28 -> 14 averages 2x2 pixels
    mean, std = data.channel_stats(x)
    batches = _batches(len(x), batch_size, steps, seed)
    grad_batches = batches[: min(GRAD_BATCHES, len(batches))]
    log_every = max(1, steps // 30)
    dims = dict(num_classes=spec.num_classes, in_channels=spec.channels, image_size=x.shape[-1])
    variants = []
    for name, act, bn in itertools.product(models, activations, bns):
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = create_model(
                name, activation=act, batchnorm=bool(bn), mean=mean, std=std, **dims
            )
            per_batch = [layer_gradient_norms(model, x[i], y[i]) for i in grad_batches]
            norms = [
                sum(r[k]["grad_norm"] for r in per_batch) / len(per_batch)
                for k in range(len(per_batch[0]))
            ]
            curve, ratio_curve, final = _train(model, x, y, batches, lr, log_every)
        v = dict(model=name, activation=act, bn=bool(bn), diverged=final is None)
        v |= dict(first_last_grad_ratio=ratio_or_none(norms[0], norms[-1]), final_train_loss=final)
        v |= dict(grad_norms=norms, layers=[r["name"] for r in per_batch[0]], loss_curve=curve)
        v |= dict(grad_ratio_curve=ratio_curve, seconds=round(time.perf_counter() - t0, 2))
        variants.append(v)
        if progress is not None:
            progress(v)
    out_dir = Path(out_dir)
    png = [
        _study_plot(variants, "grad_norms", out_dir / "gradient_norms.png", "||dL/dW|| at init"),
        _study_plot(variants, "loss", out_dir / "gradient_study_loss.png", "training loss"),
    ]
    result = dict(dataset=dataset, image_size=x.shape[-1], train_images=len(x), steps=steps)
    result |= dict(batch_size=batch_size, lr=lr, optimizer="sgd, momentum 0.9", seed=seed)
    result |= dict(
        variants=variants, findings=_findings(variants, spec.num_classes), png=[str(p) for p in png]
    )
    result["json"] = str(out_dir / "gradient_study.json")
    result["seconds"] = round(time.perf_counter() - started, 1)
    Path(result["json"]).write_text(json.dumps(result, indent=1) + "\n")
    return result

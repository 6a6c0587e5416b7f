"""Gradient flow: how big is each layer's gradient, and how big is the step it causes?

1. ``layer_gradient_norms``: ||dL/dW|| of every weighted layer (conv, linear: the weight
   tensors with ndim >= 2), first layer first, from one backward of the mean cross-entropy
   in train mode. A gradient that shrinks layer after layer towards the input is the
   vanishing gradient (Hochreiter 1991; Bengio, Simard & Frasconi 1994; Glorot & Bengio
   2010): the first layers then barely learn.
2. ``update_ratios``: ||dW|| / ||W|| of one optimizer step, per layer. Karpathy's rule of
   thumb (CS231n, "Neural Networks Part 3") is about 1e-3: much less and the layer learns too
   slowly, much more and the learning rate is too high for it.
3. ``gradient_flow_run``: both for a trained run (or the same model at initialisation), as
   a log-scale PNG in ``run_dir/plots/gradient_flow.png``.
4. ``gradient_study``: He et al. 2016 ("Deep Residual Learning", Fig. 1 and §4.2) in
   miniature, on real images. Plain nets and ResNets of 20 and 56 layers (and by default the
   pre-activation ResNet-56 of He et al. 2016b), sigmoid or ReLU,
   with or without BatchNorm (Ioffe & Szegedy 2015): the per-layer gradient norms at
   initialisation, then a short training run of each with the same seed, data order and
   optimizer, whose training-loss curves are overlaid.

The study's protocol (the defaults): 4096 Fashion-MNIST training images at 28x28 (a seeded
subset), the init gradient norms averaged over 4 batches of 64; then 200 steps of batch 64 of
SGD, momentum 0.9, lr 0.01 warmed up over 10% of the steps and cosine-decayed to 0, the same
batches for every variant; the final loss is the mean over the last 10% of the steps. He et
al. trained at lr 0.1, but in 200 steps that rate favours the shallower nets (resnet56 then
ends above resnet20); at 0.01 the deeper ResNet is ahead from step ~110 on (seeds 0 and 1).
Gradients are taken of the loss times LOSS_SCALE = 2^32 (and SGD's rate divided by it), as
in mixed-precision training (Micikevicius et al. 2018): a vanished gradient (plain56-sigmoid's
first layer gets ~1e-40) would otherwise be a denormal float, whose arithmetic is so slow that
this one variant took half the study on 2 cores. Scaling by a power of two is exact, so the
norms and the steps are the same as without it, bit for bit, wherever no float underflows.

Measured with the defaults (seed 0; first/last = the first conv's ||g|| over the head's at
init; final training loss, where ln 10 = 2.30 is chance). The 16 plain and resnet variants
took 431 s (7 min 13 s for the whole process) on 2 CPU cores with nothing else running; the
four preresnet56 variants took 150 s more with other jobs running (quiet, about 120 s).

    model     activation  BN   first/last  final loss
    plain20   sigmoid     yes  3.1e-2      1.69
    plain20   sigmoid     no   4.5e-14     2.30
    resnet20  sigmoid     yes  2.5e-2      1.76
    resnet20  sigmoid     no   2.2e-8      2.31
    plain56   sigmoid     yes  3.9e-3      2.08
    plain56   sigmoid     no   1.3e-37     2.30
    resnet56  sigmoid     yes  1.8e-3      2.30
    resnet56  sigmoid     no   3.2e-20     2.30
    plain20   relu        yes  3.8         1.05
    plain20   relu        no   0.37        0.77
    resnet20  relu        yes  0.26        0.64
    resnet20  relu        no   0.60        0.90
    plain56   relu        yes  9.2e2       1.63
    plain56   relu        no   0.96        2.30
    resnet56  relu        yes  0.32        0.49
    resnet56  relu        no   0.16        diverged at step 1 (no BN: the residual sum grows)
    preresnet56 sigmoid   yes  7.9e-2      1.95
    preresnet56 sigmoid   no   1.5e-2      2.30
    preresnet56 relu      yes  2.5         1.21
    preresnet56 relu      no   0.23        2.30

On one thread the sums round differently and two chaotic runs end elsewhere (plain20-relu
without BN learns, then collapses to 2.31 at step ~100; plain56-relu-BN ends at 2.18); the
conclusions below hold on both.

The classic results: the first layer of plain56-sigmoid without BN gets 1e-37 of its head's
gradient, and it never learns. Its ResNet twin does not escape with sigmoid: these are He et
al.'s blocks, with the activation *after* the addition, so every block's sigmoid (slope
<= 1/4) still sits on the shortcut path; the shortcuts halve the number of squashing layers
and so the exponent (1e-20, the square root). The pre-activation ResNet (2016b) has nothing
but its shortcuts on that path, and its first layer gets 1.5e-2 of the head's gradient with
sigmoid and no BN: it does not vanish (it still learns little in 200 steps of sigmoid without
BN, like every net here). With ReLU the ResNet's gradient stays within
an order of magnitude of the head's, and BN keeps even the sigmoid nets' within 1e-3. The
degradation (Fig. 1) shows with ReLU and BN, the paper's setting: plain56 ends at 1.63 and
plain20 at 1.05, while resnet56 (0.49) beats resnet20 (0.64); with sigmoid and BN, resnet56
learns nothing in this budget (2.30, resnet20 1.76). Deep plain nets with BN have
the opposite of a vanishing gradient at init: the first layer's is 1e3 times the head's
(Yang et al. 2019, "A Mean Field Theory of Batch Normalization").

Every function leaves the model as it found it: gradients come from ``torch.autograd.grad``
or from a deep copy, so no ``.grad`` is left; each submodule's train/eval flag and every
buffer (BatchNorm running statistics, which a train-mode forward would update) are restored.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from matplotlib.ticker import MaxNLocator
from torch import Tensor, nn

from neuralab import data
from neuralab.errors import UserError
from neuralab.models import create_model
from neuralab.plots import save_figure, subplots
from neuralab.seed import derived_generator

KARPATHY_RATIO = 1e-3  # the update/weight ratio a healthy layer has, to within ~10x
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
LOSS_SCALE = 2.0**32  # keeps vanished gradients (~1e-40) out of the slow denormal floats


def _logits(model: nn.Module, x: Tensor) -> Tensor:
    """(N, classes) logits: an image model's output, or a language model's (B*T, V)."""
    out = model(x)
    if isinstance(out, tuple):  # a language model returns (logits, state)
        out = out[0]
    return out.flatten(0, -2)


def _loss_in_forward_order(
    model: nn.Module, x: Tensor, y: Tensor
) -> tuple[Tensor, list[tuple[str, nn.Parameter]]]:
    """(mean cross-entropy of the model on (x, y), its weighted layers in forward order).

    The order is that in which the layers' modules first run (forward pre-hooks), so the
    first conv comes first and the head last whatever order the modules were declared in.
    A layer that did not run is left out: it has no gradient.
    """
    owned: dict[nn.Module, list[tuple[str, nn.Parameter]]] = {}
    for mod_name, module in model.named_modules():
        weights = [
            (f"{mod_name}.{name}" if mod_name else name, p)
            for name, p in module.named_parameters(recurse=False)
            if p.ndim >= 2 and p.requires_grad
        ]
        if weights:
            owned[module] = weights
    order: list[tuple[str, nn.Parameter]] = []
    seen: set[int] = set()  # ids of modules and parameters listed (a tied weight runs twice)

    def hook(module: nn.Module, args: Any) -> None:
        for name, p in owned[module]:
            if id(p) not in seen:
                seen.add(id(p))
                order.append((name, p))

    handles = [module.register_forward_pre_hook(hook) for module in owned]
    try:
        loss = F.cross_entropy(_logits(model, x), y.flatten())
    finally:
        for handle in handles:
            handle.remove()
    return loss, order


class _Untouched:
    """Context: the model leaves the block with its modes and buffers as they came in."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> None:
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.buffers = [b.detach().clone() for b in self.model.buffers()]

    def __exit__(self, *exc: object) -> None:
        for module, training in self.modes:
            module.training = training
        with torch.no_grad():
            for b, saved in zip(self.model.buffers(), self.buffers, strict=True):
                b.copy_(saved)


def _norm(t: Tensor) -> float:
    """The L2 norm in float64: a vanished gradient of 1e-30 would square to 0 in float32."""
    return t.detach().double().norm().item()


def layer_gradient_norms(model: nn.Module, x: Tensor, y: Tensor) -> list[dict[str, Any]]:
    """{"name", "grad_norm", "weight_norm"} of each weighted layer, in forward order (the
    first conv first, the head last), from one backward of the mean cross-entropy of the
    model on (x, y) in train mode (BatchNorm on batch statistics, as training sees it).

    The model is left untouched: gradients come from ``torch.autograd.grad``, the modes and
    buffers are restored. The loss is scaled by LOSS_SCALE (exactly undone) and norms are
    taken in float64, so a vanished gradient is neither slow nor rounded to a denormal.
    """
    with _Untouched(model), torch.enable_grad():
        model.train()
        loss, layers = _loss_in_forward_order(model, x, y)
        grads = torch.autograd.grad(loss * LOSS_SCALE, [p for _, p in layers])
    return [
        {"name": name, "grad_norm": _norm(g) / LOSS_SCALE, "weight_norm": _norm(p)}
        for (name, p), g in zip(layers, grads, strict=True)
    ]


def update_ratios(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    lr: float,
    optimizer: str = "sgd",
    *,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
) -> list[dict[str, Any]]:
    """{"name", "update_norm", "weight_norm", "ratio"} of each weighted layer, in forward
    order: ||W' - W|| / ||W|| for one step of ``optimizer`` ("sgd" or "adamw") from a fresh
    optimizer state on the mean cross-entropy of (x, y), taken on a deep copy in train mode
    (None for an all-zero weight).

    The first SGD step is lr * g (lr * (1 + momentum) * g with Nesterov), plus lr * wd * W;
    the first Adam step is about lr * sign(g) per weight. Weight decay applies to the weighted
    layers only, as in training (``neuralab.train.optim.param_groups``).
    """
    from neuralab.train.optim import param_groups

    twin = copy.deepcopy(model)
    twin.train()
    with torch.enable_grad():
        loss, layers = _loss_in_forward_order(twin, x, y)
        loss.backward()
    groups = param_groups(twin, weight_decay)
    if optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)
    elif optimizer in ("adam", "adamw"):
        opt = torch.optim.AdamW(groups, lr=lr, betas=betas)
    else:
        raise UserError(f"optimizer {optimizer!r} is not one of: sgd, adamw")
    before = [p.detach().clone() for _, p in layers]
    opt.step()
    out = []
    for (name, p), w in zip(layers, before, strict=True):
        update, weight = _norm(p - w), _norm(w)
        ratio = _ratio(update, weight)
        out.append({"name": name, "update_norm": update, "weight_norm": weight, "ratio": ratio})
    return out


def _ratio(first: float, last: float) -> float | None:
    """first / last, or None when it is undefined (JSON has no inf or NaN)."""
    value = first / last if last > 0 else math.nan
    return value if math.isfinite(value) else None


def _positive(values: Sequence[float | None]) -> list[float]:
    """Values for a log axis: zeros (a gradient that underflowed) and None become gaps."""
    return [v if v is not None and 0 < v < math.inf else math.nan for v in values]


def plot_gradient_flow(layers: list[dict[str, Any]], out: Path, title: str = "") -> Path:
    """Two log-scale panels against the layer index: the gradient norm of each layer (and its
    ratio to the weight norm), and the update/weight ratio with Karpathy's 1e-3 marked."""
    index = range(len(layers))
    fig, (ax_g, ax_u) = subplots(1, 2, figsize=(11, 4))
    ax_g.semilogy(index, _positive([r["grad_norm"] for r in layers]), "o-", ms=3, label="||g||")
    rel = [r["grad_norm"] / r["weight_norm"] if r["weight_norm"] else 0.0 for r in layers]
    ax_g.semilogy(index, _positive(rel), "s--", ms=3, label="||g|| / ||W||")
    ax_g.set(xlabel="layer (0: first, last: head)", ylabel="norm", title="gradient per layer")
    ax_g.legend()
    if "update_ratio" in layers[0]:
        ax_u.semilogy(index, _positive([r["update_ratio"] for r in layers]), "o-", ms=3)
        ax_u.axhline(KARPATHY_RATIO, color="gray", ls=":", label="1e-3 (rule of thumb)")
        ax_u.legend()
    ax_u.set(xlabel="layer", ylabel="||dW|| / ||W||", title="update / weight, one step")
    for ax in (ax_g, ax_u):
        ax.grid(alpha=0.3, which="both")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, out)


def gradient_flow_run(run_dir: str | Path, which: str = "best", n: int = 256) -> dict[str, Any]:
    """Per-layer gradient norms and update/weight ratios of the model of ``run_dir`` on ``n``
    of its training images (the first of its first epoch's order), for checkpoint ``which``
    ("best" or "last"), or "init": the same config's model freshly initialised with the
    run's seed, as its training started.

    The loss is plain cross-entropy in train mode (whatever the run's task); the update is
    one step of the run's optimizer at its base learning rate. Writes
    ``run_dir/plots/gradient_flow.png`` (``gradient_flow_init.png`` for "init") and returns
    a JSON-able summary with ``first_last_grad_ratio``: the first layer's gradient norm over
    the last layer's (the head's).
    """
    from neuralab import config, train
    from neuralab.train.loop import build_model

    if which not in ("best", "last", "init"):
        raise UserError(f"which must be best, last or init, got {which!r}")
    if n < 1:
        raise UserError(f"n must be >= 1, got {n}")
    run_dir = Path(run_dir)
    cfg = config.load_run(run_dir)
    if data.is_text(cfg.data):
        raise UserError(f"{run_dir} is a text run; gradient flow is measured on image runs")
    x_train, y_train = data.load_split(cfg.data, "train")
    if which == "init":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)  # as the loop seeds before building: the same init
            model = build_model(cfg, data.DATASETS.get(cfg.data.name), x_train)
    else:
        model = train.load_model(run_dir, which)
    order = torch.randperm(len(x_train), generator=derived_generator(cfg.seed, 0))[:n]
    x, y = x_train[order], y_train[order]
    layers = layer_gradient_norms(model, x, y)
    o = cfg.optim
    kw = dict(momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay)
    updates = update_ratios(model, x, y, o.lr, o.name, betas=(o.beta1, o.beta2), **kw)
    for layer, update in zip(layers, updates, strict=True):
        layer["update_ratio"] = update["ratio"]
    suffix = "_init" if which == "init" else ""
    out = run_dir / "plots" / f"gradient_flow{suffix}.png"
    title = f"{run_dir.name} ({which}): {cfg.model.name}, {len(x)} training images"
    plot_gradient_flow(layers, out, title)
    return {
        "which": which,
        "model": cfg.model.name,
        "n": len(x),
        "optimizer": o.name,
        "lr": o.lr,
        "first_last_grad_ratio": _ratio(layers[0]["grad_norm"], layers[-1]["grad_norm"]),
        "layers": layers,
        "png": str(out),
    }


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
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
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
    model.train()
    warmup = max(1, int(WARMUP * len(batches)))
    losses: list[float] = []
    curve: list[list[float]] = []
    ratios: list[list[float | None]] = []
    for step, idx in enumerate(batches):
        for group in opt.param_groups:
            group["lr"] = lr * _lr_factor(step, len(batches), warmup) / LOSS_SCALE
        loss, layers = _loss_in_forward_order(model, x[idx], y[idx])
        if not math.isfinite(loss.item()):
            return curve, ratios, None
        opt.zero_grad(set_to_none=True)
        (loss * LOSS_SCALE).backward()  # ... scaled gradients and rate make the same step
        opt.step()
        losses.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == len(batches):
            window = losses[-log_every:]
            curve.append([step + 1, sum(window) / len(window)])
            first, last = layers[0][1].grad, layers[-1][1].grad
            ratios.append([step + 1, _ratio(_norm(first), _norm(last))])
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
                ax.semilogy(_positive(v["grad_norms"]), marker=".", ms=3, **style)
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
        v |= dict(first_last_grad_ratio=_ratio(norms[0], norms[-1]), final_train_loss=final)
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

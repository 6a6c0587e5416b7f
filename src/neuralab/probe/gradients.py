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

The study of plain against residual nets (He et al. 2016) that these measurements serve is
``neuralab.probe.gradient_study``.

Gradients are taken of the loss times LOSS_SCALE = 2^32 (and divided by it again), as in
mixed-precision training (Micikevicius et al. 2018): the gradient of a deep sigmoid net's
first layer can vanish below float32's smallest normal number (1.2e-38), and arithmetic on
such denormal floats is many times slower on a CPU. Scaling by a power of two is exact, so
the norms are the same as without it, bit for bit, wherever no float underflows. Norms are
taken in float64, where such a gradient does not square to 0.

Every function leaves the model as it found it: gradients come from ``torch.autograd.grad``
or from a deep copy, so no ``.grad`` is left; each submodule's train/eval flag and every
buffer (BatchNorm running statistics, which a train-mode forward would update) are restored.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from matplotlib.ticker import MaxNLocator
from torch import Tensor, nn

from neuralab import data
from neuralab.errors import UserError
from neuralab.plots import save_figure, subplots
from neuralab.seed import derived_generator

KARPATHY_RATIO = 1e-3  # the update/weight ratio a healthy layer has, to within ~10x
LOSS_SCALE = 2.0**32  # keeps vanished gradients out of the slow denormal floats


def _logits(model: nn.Module, x: Tensor) -> Tensor:
    """(N, classes) logits: an image model's output, or a language model's (B*T, V)."""
    out = model(x)
    if isinstance(out, tuple):  # a language model returns (logits, state)
        out = out[0]
    return out.flatten(0, -2)


def loss_in_forward_order(
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


def float64_norm(t: Tensor) -> float:
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
        loss, layers = loss_in_forward_order(model, x, y)
        grads = torch.autograd.grad(loss * LOSS_SCALE, [p for _, p in layers])
    return [
        {"name": name, "grad_norm": float64_norm(g) / LOSS_SCALE, "weight_norm": float64_norm(p)}
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
        loss, layers = loss_in_forward_order(twin, x, y)
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
        update, weight = float64_norm(p - w), float64_norm(w)
        ratio = ratio_or_none(update, weight)
        out.append({"name": name, "update_norm": update, "weight_norm": weight, "ratio": ratio})
    return out


def ratio_or_none(first: float, last: float) -> float | None:
    """first / last, or None when it is undefined (JSON has no inf or NaN)."""
    value = first / last if last > 0 else math.nan
    return value if math.isfinite(value) else None


def for_log_axis(values: Sequence[float | None]) -> list[float]:
    """Values for a log axis: zeros (a gradient that underflowed) and None become gaps."""
    return [v if v is not None and 0 < v < math.inf else math.nan for v in values]


def plot_gradient_flow(layers: list[dict[str, Any]], out: Path, title: str = "") -> Path:
    """Two log-scale panels against the layer index: the gradient norm of each layer (and its
    ratio to the weight norm), and the update/weight ratio with Karpathy's 1e-3 marked."""
    index = range(len(layers))
    fig, (ax_g, ax_u) = subplots(1, 2, figsize=(11, 4))
    ax_g.semilogy(index, for_log_axis([r["grad_norm"] for r in layers]), "o-", ms=3, label="||g||")
    rel = [r["grad_norm"] / r["weight_norm"] if r["weight_norm"] else 0.0 for r in layers]
    ax_g.semilogy(index, for_log_axis(rel), "s--", ms=3, label="||g|| / ||W||")
    ax_g.set(xlabel="layer (0: first, last: head)", ylabel="norm", title="gradient per layer")
    ax_g.legend()
    if "update_ratio" in layers[0]:
        ax_u.semilogy(index, for_log_axis([r["update_ratio"] for r in layers]), "o-", ms=3)
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
    from neuralab.tasks.classify import build_image_model

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
            model = build_image_model(cfg, data.DATASETS.get(cfg.data.name), x_train)
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
        "first_last_grad_ratio": ratio_or_none(layers[0]["grad_norm"], layers[-1]["grad_norm"]),
        "layers": layers,
        "png": str(out),
    }

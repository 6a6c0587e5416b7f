"""Saliency maps: which input pixels does the logit of a class depend on?

Four gradient attributions of the logit f_c (before the softmax, whose saturation would hide
the gradient) to the pixels of an image x in [0, 1], each shaped like x (one value per channel):

1. ``vanilla_gradient``: df_c/dx (Simonyan, Vedaldi & Zisserman 2014, "Deep Inside
   Convolutional Networks"). How much a small change of each pixel moves the logit.
2. ``gradient_x_input``: x * df_c/dx (Shrikumar et al. 2016, "Not Just a Black Box"). For a
   linear model it is exactly each pixel's additive contribution to the logit.
3. ``integrated_gradients``: (x - x') * the average gradient on the straight path from a
   baseline x' (black by default) to x (Sundararajan, Taly & Yan 2017, "Axiomatic Attribution
   for Deep Networks"). It satisfies *completeness*: the attributions add up to
   f_c(x) - f_c(x'), which ``completeness_gap`` measures.
4. ``smoothgrad``: the gradient averaged over noisy copies of x (Smilkov et al. 2017,
   "SmoothGrad: removing noise by adding noise"), which removes the pixel-scale speckle that
   the kinks of a ReLU network put into a single gradient.

Every method runs the model in eval mode (BatchNorm on, and keeping, its running statistics;
dropout off) and restores each submodule's mode afterwards, takes gradients with
``torch.autograd.grad`` with respect to the input only (no ``.grad`` is left on a parameter),
never modifies the input, and returns a detached CPU tensor. The class c is the model's
prediction for each image unless ``target`` (one class, or one class per image) is given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from neuralab import config, data
from neuralab.attack.base import eval_mode, model_device
from neuralab.errors import UserError
from neuralab.plots import save_figure, subplots

IG_STEPS = 64  # midpoint-rule steps: < 1% completeness gap on the small CNNs of neuralab


def _prepare(model: nn.Module, x: Tensor, target: int | Tensor | None) -> tuple[Tensor, Tensor]:
    """(x detached on the model's device, target classes (B,)); call in eval mode.

    Without ``target`` the classes are the model's predictions for x.
    """
    x = x.detach().to(model_device(model, x.device))
    with torch.no_grad():
        logits = model(x)  # (B, num_classes)
    if target is None:
        return x, logits.argmax(dim=1)
    y = torch.as_tensor(target, dtype=torch.long, device=x.device)
    if y.ndim == 0:
        y = y.expand(len(x))
    if y.shape != (len(x),):
        raise UserError(f"target must be one class or {len(x)} classes, got {tuple(y.shape)}")
    num_classes = logits.shape[1]
    if y.min() < 0 or y.max() >= num_classes:
        raise UserError(f"target classes must be in 0..{num_classes - 1}, got {y.tolist()}")
    return x, y


def _logit_grad(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(logits f_y(x) (B,), their gradients df_y/dx like x).

    The logits are summed before differentiating; in eval mode the images of a batch do not
    interact, so each image gets the gradient of its own logit.
    """
    x = x.detach().requires_grad_(True)
    logit = model(x).gather(1, y[:, None]).squeeze(1)  # (B,)
    (grad,) = torch.autograd.grad(logit.sum(), x)
    return logit.detach(), grad


def vanilla_gradient(model: nn.Module, x: Tensor, target: int | Tensor | None = None) -> Tensor:
    """df_c/dx for images ``x`` (B, C, H, W) (Simonyan et al. 2014): a first-order Taylor
    view of the logit around x. Sharp but noisy, and blind to how much a pixel contributes."""
    with eval_mode(model), torch.enable_grad():
        x, y = _prepare(model, x, target)
        _, grad = _logit_grad(model, x, y)
    return grad.detach().cpu()


def gradient_x_input(model: nn.Module, x: Tensor, target: int | Tensor | None = None) -> Tensor:
    """x * df_c/dx (Shrikumar et al. 2016): the gradient weighted by the pixel's value, so a
    black pixel (0) gets nothing. Integrated gradients with a black baseline and one step."""
    with eval_mode(model), torch.enable_grad():
        x, y = _prepare(model, x, target)
        _, grad = _logit_grad(model, x, y)
    return (x * grad).detach().cpu()


def _baseline(x: Tensor, baseline: Tensor | None) -> Tensor:
    """The baseline x' as a tensor like ``x``: zeros (a black image) by default."""
    if baseline is None:
        return torch.zeros_like(x)
    baseline = baseline.detach().to(x.device, x.dtype)
    try:
        return baseline.expand_as(x)
    except RuntimeError:
        raise UserError(
            f"baseline of shape {tuple(baseline.shape)} does not broadcast to the images' "
            f"shape {tuple(x.shape)}"
        ) from None


def integrated_gradients(
    model: nn.Module,
    x: Tensor,
    target: int | Tensor | None = None,
    baseline: Tensor | None = None,
    steps: int = IG_STEPS,
    batch_size: int = 256,
) -> Tensor:
    """(x - x') * the average of df_c/dx on the straight path x' + a (x - x'), a in [0, 1]
    (Sundararajan et al. 2017). The baseline x' defaults to zeros, a black image, which the
    model should see as "no evidence"; a tensor broadcastable to x may replace it.

    The path integral is a midpoint Riemann sum over ``steps`` points a = (k + 1/2) / steps:
    exact when the gradient is linear along the path (linear and quadratic models), and for a
    ReLU network, whose gradient jumps at each kink the path crosses, the error shrinks like
    1/steps. ``completeness_gap`` says whether ``steps`` was enough. The path points go
    through the model ``batch_size`` images at a time (at least one point per image).
    """
    if steps < 1 or batch_size < 1:
        raise UserError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    with eval_mode(model), torch.enable_grad():
        x, y = _prepare(model, x, target)
        base = _baseline(x, baseline)
        diff = x - base
        alphas = (torch.arange(steps, dtype=x.dtype, device=x.device) + 0.5) / steps
        total = torch.zeros_like(x)
        for a in alphas.split(max(1, batch_size // len(x))):  # a: (k,) alphas per pass
            points = base + a.view(-1, *[1] * x.ndim) * diff  # (k, B, C, H, W)
            _, grad = _logit_grad(model, points.flatten(0, 1), y.repeat(len(a)))
            total += grad.view(len(a), *x.shape).sum(dim=0)  # (B, C, H, W)
        attributions = diff * total / steps
    return attributions.detach().cpu()


def completeness_gap(
    model: nn.Module,
    x: Tensor,
    attributions: Tensor,
    target: int | Tensor | None = None,
    baseline: Tensor | None = None,
) -> Tensor:
    """Completeness gap (B,) of integrated-gradient ``attributions`` of ``x``, relative to
    the size of the attributions:

        |sum_i a_i - (f_c(x) - f_c(x'))| / max(|f_c(x) - f_c(x')|, sum_i |a_i|)

    Integrated gradients sum to f_c(x) - f_c(x') exactly (Sundararajan et al. 2017, who
    advise raising the steps until the Riemann sum is within 5% of it); what is left is the
    error of the Riemann sum, so the gap says whether ``steps`` was enough (aim for < 1%).
    The denominator is the paper's |f_c(x) - f_c(x')| whenever the attributions agree in
    sign. It is the attributions' total size when they cancel: the quadrature error grows
    with the gradients on the path, not with the difference, which can be ~0 when the
    baseline is nearly as much evidence for the class as the image, and no number of steps
    would then bring an error relative to it under 1%. A gap of 0 when x is the baseline.
    Pass the same ``target`` and ``baseline`` as to ``integrated_gradients``.
    """
    with eval_mode(model), torch.no_grad():
        x, y = _prepare(model, x, target)
        base = _baseline(x, baseline)
        f_x = model(x).gather(1, y[:, None]).squeeze(1)  # (B,)
        f_base = model(base).gather(1, y[:, None]).squeeze(1)
    delta = (f_x - f_base).double().cpu()  # (B,)
    a = attributions.double().flatten(1)  # (B, C*H*W)
    size = torch.maximum(delta.abs(), a.abs().sum(dim=1)).clamp_min(1e-12)
    return (a.sum(dim=1) - delta).abs() / size


def smoothgrad(
    model: nn.Module,
    x: Tensor,
    target: int | Tensor | None = None,
    samples: int = 25,
    sigma: float = 0.15,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The vanilla gradient averaged over ``samples`` copies x + N(0, s^2), with s = ``sigma``
    * (max - min of each image) (Smilkov et al. 2017, who find 10-20% of the range best).

    The class c is the prediction for the clean image, so every noisy copy explains the same
    logit. The noise is drawn on the CPU from ``generator`` (torch's global RNG if None), so
    one seed gives the same map. sigma = 0 gives the vanilla gradient.
    """
    if samples < 1 or sigma < 0:
        raise UserError(f"smoothgrad needs samples >= 1 and sigma >= 0, got {samples}, {sigma}")
    with eval_mode(model), torch.enable_grad():
        x, y = _prepare(model, x, target)
        span = x.flatten(1).amax(dim=1) - x.flatten(1).amin(dim=1)  # (B,)
        scale = (sigma * span).view(-1, *[1] * (x.ndim - 1))  # (B, 1, 1, 1)
        total = torch.zeros_like(x)
        for _ in range(samples):
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            _, grad = _logit_grad(model, x + scale * noise, y)
            total += grad
    return (total / samples).detach().cpu()


METHODS: dict[str, Callable[..., Tensor]] = {
    "grad": vanilla_gradient,
    "gradxinput": gradient_x_input,
    "integrated-gradients": integrated_gradients,
    "smoothgrad": smoothgrad,
}


def _method(name: str) -> Callable[..., Tensor]:
    """The method called ``name``; a UserError naming the choices if there is none."""
    if name not in METHODS:
        raise UserError(f"unknown saliency method {name!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[name]


def saliency(
    model: nn.Module, x: Tensor, method: str, target: int | Tensor | None = None, **kw: Any
) -> Tensor:
    """The saliency map of ``method`` (a key of ``METHODS``) for images ``x``; ``kw`` goes to
    the method (``steps``, ``baseline``, ``samples``, ``sigma``, ``generator``...)."""
    return _method(method)(model, x, target, **kw)


def _heat(maps: Tensor, channels: int = 1) -> Tensor:
    """(B, C, H, W) attributions -> (B, H, W) heat in [0, 1] (or (B, T, C, H, W) with
    ``channels=2`` -> (B, T, H, W)): |map| summed over channels, divided by each example's
    maximum, so every picture (every clip, all its frames alike) uses its full colour scale."""
    heat = maps.detach().abs().sum(dim=channels).float().cpu()
    return heat / heat.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, *[1] * (heat.ndim - 1))


def plot_saliency(
    images: Tensor,
    maps: Tensor,
    labels: Tensor,
    predictions: Tensor,
    classes: Sequence[str],
    out: Path,
    title: str = "",
) -> Path:
    """A PNG with one row per image: the image, its saliency heat map (|map| summed over
    channels, normalised per image) and the heat map over the image. The image's title gives
    the true and the predicted class, in red when they differ."""
    heat = _heat(maps)
    n = len(images)
    fig, axes = subplots(n, 3, figsize=(5.4, 1.9 * n + 0.4), squeeze=False)
    for i in range(n):
        img = images[i].detach().float().cpu().permute(1, 2, 0).clamp(0, 1).numpy()  # (H, W, C)
        show = dict(cmap="gray", vmin=0, vmax=1) if img.shape[2] == 1 else {}
        img = img[:, :, 0] if img.shape[2] == 1 else img
        true, pred = classes[int(labels[i])], classes[int(predictions[i])]
        color = "black" if true == pred else "red"
        axes[i, 0].imshow(img, **show)
        axes[i, 0].set_title(f"true {true}, pred {pred}", fontsize=8, color=color)
        axes[i, 1].imshow(heat[i].numpy(), cmap="inferno", vmin=0, vmax=1)
        axes[i, 1].set_title("saliency", fontsize=8)
        axes[i, 2].imshow(img, **show)
        axes[i, 2].imshow(heat[i].numpy(), cmap="inferno", vmin=0, vmax=1, alpha=0.55)
        axes[i, 2].set_title("overlay", fontsize=8)
        for ax in axes[i]:
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, out)


def frame_shares(maps: Tensor) -> Tensor:
    """(B, T, C, H, W) attributions of clips -> (B, T): each frame's share of its clip's
    total |attribution|, which says which frames the decision used."""
    mass = maps.detach().abs().flatten(2).sum(dim=2).float().cpu()  # (B, T)
    return mass / mass.sum(dim=1, keepdim=True).clamp_min(1e-12)


def plot_clip_saliency(
    clips: Tensor,
    maps: Tensor,
    labels: Tensor,
    predictions: Tensor,
    classes: Sequence[str],
    out: Path,
    title: str = "",
    every: int = 2,
) -> Path:
    """A PNG with two rows per clip (B, T, C, H, W) in [0, 1]: every ``every``-th frame, and
    under it that frame's saliency heat (|map| summed over channels, normalised by the
    clip's maximum, so the frames compare), titled with the frame's share of the clip's."""
    heat = _heat(maps, channels=2)  # (B, T, H, W)
    shares = frame_shares(maps)
    shown = range(0, clips.shape[1], every)
    fig, axes = subplots(
        2 * len(clips), len(shown), figsize=(0.95 * len(shown), 2.2 * len(clips) + 0.4)
    )
    axes = axes.reshape(2 * len(clips), len(shown))
    for i in range(len(clips)):
        true, pred = classes[int(labels[i])], classes[int(predictions[i])]
        for k, t in enumerate(shown):
            axes[2 * i, k].imshow(
                clips[i, t].float().mean(0).cpu().numpy(), cmap="gray", vmin=0, vmax=1
            )
            axes[2 * i + 1, k].imshow(heat[i, t].numpy(), cmap="inferno", vmin=0, vmax=1)
            axes[2 * i + 1, k].set_title(f"t={t} {shares[i, t]:.0%}", fontsize=6)
        color = "black" if true == pred else "red"
        axes[2 * i, 0].set_title(f"true {true}, pred {pred}", fontsize=8, loc="left", color=color)
    for ax in axes.flat:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, out)


def saliency_run(
    run_dir: str | Path, indices: list[int], method: str, which: str = "best", **kw: Any
) -> dict[str, Any]:
    """Saliency maps of the trained model of ``run_dir`` for its test images (or clips) at
    ``indices``.

    Writes ``run_dir/plots/saliency_<method>.png`` and returns a JSON-able summary: method,
    indices, true labels, predictions, the PNG's path, for clips each frame's share of the
    saliency (``frame_share``) and, for integrated gradients, each example's
    ``completeness_gap``. ``kw`` goes to the method, as in ``saliency``.
    """
    from neuralab import train  # lazily: importing saliency alone never pulls in training

    _method(method)  # a typo fails before the run is loaded
    run_dir = Path(run_dir)
    cfg = config.load_run(run_dir)
    model = train.load_model(run_dir, which)
    clips = data.DATASETS.get(cfg.data.name).kind == "clips"
    if clips:
        from neuralab.data import moving

        x_test, y_test = moving.load_clip_split(cfg.data, "test")
        classes = moving.classes(cfg.data.variant)
    else:
        x_test, y_test = data.load_split(cfg.data, "test")
        classes = data.DATASETS.get(cfg.data.name).classes
    bad = [i for i in indices if not 0 <= i < len(x_test)]
    if not indices or bad:
        raise UserError(
            f"test image indices must be in 0..{len(x_test) - 1} (the {cfg.data.name} test "
            f"split), got {bad or 'none'}"
        )
    x, y = x_test[indices], y_test[indices]
    if x.dtype == torch.uint8:
        x = x.float() / 255
    maps = saliency(model, x, method, **kw)
    with eval_mode(model), torch.no_grad():
        predictions = model(x.to(model_device(model, x.device))).argmax(dim=1).cpu()
    out = run_dir / "plots" / f"saliency_{method}.png"
    plot = plot_clip_saliency if clips else plot_saliency
    plot(x, maps, y, predictions, classes, out, f"{method}: {run_dir.name} ({which})")
    summary: dict[str, Any] = {
        "method": method,
        "indices": list(indices),
        "labels": y.tolist(),
        "predictions": predictions.tolist(),
        "png": str(out),
    }
    if clips:
        summary["frame_share"] = [[round(v, 4) for v in row] for row in frame_shares(maps).tolist()]
    if method == "integrated-gradients":
        gap_kw = {k: v for k, v in kw.items() if k in ("target", "baseline")}
        summary["completeness_gap"] = completeness_gap(model, x, maps, **gap_kw).tolist()
    return summary

"""PNG plots of a run (learning curves, the test confusion matrix, attack curves, attention
pictures) and the two helpers every plot in neuralab is drawn with.

Figures are ``matplotlib.figure.Figure`` objects owned by their caller, never pyplot's: this
module neither selects a backend nor imports ``matplotlib.pyplot``, so importing neuralab in
a notebook leaves the user's backend, and its inline plots, as they were. ``savefig`` to a
``.png`` renders with the Agg canvas whatever the backend is.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from neuralab.runs import read_json, read_jsonl


def subplots(
    nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], **kw: Any
) -> tuple[Figure, Any]:
    """(figure, axes) like ``pyplot.subplots``, without pyplot: the figure is not registered
    with any backend or figure manager and is freed with its last reference. ``kw`` goes to
    ``Figure.subplots`` (``squeeze``, ``sharex``...)."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kw)


def save_figure(fig: Figure, out: Path) -> Path:
    """Lay out and write ``out`` as PNG (creating its folder)."""
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in records if key in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_curves(run_dir: Path) -> Path:
    """``plots/curves.png`` of ``curves_figure``."""
    return save_figure(curves_figure(run_dir), run_dir / "plots" / "curves.png")


def curves_figure(run_dir: Path) -> Figure:
    """Loss and accuracy against the optimizer step, train and val, from metrics.jsonl; the
    kNN accuracy of a pretraining run and the robust accuracy of adversarial training too;
    a dotted line at the best checkpoint's step (``best_step`` in results.json). A run that
    measures no accuracy (a language model) gets the loss panel alone."""
    records = read_jsonl(run_dir / "metrics.jsonl")
    best_step = read_json(run_dir / "results.json").get("best_step")
    extra = (("val/knn_acc", "val kNN (pretraining)"), ("val/robust_acc", "val PGD"))
    has_acc = any(
        _series(records, key)[0] for key in ("train/acc", "val/acc", *(k for k, _ in extra))
    )
    fig, axes = subplots(1, 2 if has_acc else 1, figsize=(11 if has_acc else 6, 4), squeeze=False)
    ax_loss, ax_acc = axes[0][0], axes[0][-1] if has_acc else None
    for split, style in (("train", "-"), ("val", "o-")):
        for ax, metric in ((ax_loss, "loss"), (ax_acc, "acc")):
            steps, values = _series(records, f"{split}/{metric}")
            if steps and ax is not None:
                ax.plot(steps, values, style, label=split, markersize=3)
    ax_loss.set(xlabel="step", ylabel="cross-entropy", title="loss")
    panels = [ax_loss]
    if ax_acc is not None:
        for key, label in extra:
            steps, values = _series(records, key)
            if steps:
                ax_acc.plot(steps, values, "s--", label=label, markersize=3)
        ax_acc.set(xlabel="step", ylabel="accuracy", title="accuracy")
        panels.append(ax_acc)
    for ax in panels:
        if best_step is not None:
            ax.axvline(best_step, color="gray", linestyle=":", label=f"best (step {best_step})")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(run_dir.name)
    return fig


def plot_confusion(confusion: torch.Tensor, classes: Sequence[str], out: Path) -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: predicted), with counts."""
    cm = confusion.double()
    rates = cm / cm.sum(dim=1, keepdim=True).clamp(min=1)
    n = len(classes)
    fig, ax = subplots(figsize=(1.0 + 0.6 * n, 0.6 + 0.6 * n))
    ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            color = "white" if rates[i, j] > 0.5 else "black"
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title="test confusion matrix")
    return save_figure(fig, out)


def plot_robustness(report: dict, out: Path) -> Path:
    """Robust accuracy against eps (eps 0 is the clean accuracy), from an attack report."""
    eps = [0.0] + [r["eps"] for r in report["results"]]
    acc = [report["clean_acc"]] + [r["robust_acc"] for r in report["results"]]
    fig, ax = subplots(figsize=(5.5, 4))
    ax.plot(eps, acc, "o-")
    ax.set(
        xlabel=f"eps ({report['norm']})",
        ylabel="accuracy",
        ylim=(0, 1.02),
        title=f"{report['attack'].upper()} on {report['n']} test images",
    )
    ax.grid(alpha=0.3)
    return save_figure(fig, out)


def plot_attack_loss(losses: dict[float, list[float]], out: Path) -> Path:
    """Mean attack loss at each PGD step, one line per eps: a flat tail means converged."""
    fig, ax = subplots(figsize=(5.5, 4))
    for eps, values in losses.items():
        if values:
            ax.plot(range(len(values)), values, label=f"eps {eps:g}")
    ax.set(xlabel="PGD step (0: start)", ylabel="mean attack loss", title="attack loss per step")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, out)


def plot_adversarial_grid(
    clean: torch.Tensor,
    adversarial: torch.Tensor,
    labels: torch.Tensor,
    clean_pred: torch.Tensor,
    adv_pred: torch.Tensor,
    classes: Sequence[str],
    out: Path,
    title: str = "",
) -> Path:
    """Clean images (top row) above their adversarial versions (bottom row), with the
    true label and the model's predictions; a red title marks a changed prediction."""
    n = len(clean)
    fig, axes = subplots(2, n, figsize=(1.6 * n, 4.2), squeeze=False)
    for i in range(n):
        for row, (img, pred) in enumerate(
            ((clean[i], clean_pred[i]), (adversarial[i], adv_pred[i]))
        ):
            ax = axes[row][i]
            shown = img.permute(1, 2, 0).squeeze(-1).clamp(0, 1).numpy()
            ax.imshow(shown, cmap="gray" if img.shape[0] == 1 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            wrong = int(pred) != int(labels[i])
            text = f"pred {classes[int(pred)]}"
            if row == 0:
                text = f"true {classes[int(labels[i])]}\n{text}"
            ax.set_title(text, fontsize=8, color="red" if wrong else "black")
    axes[0][0].set_ylabel("clean")
    axes[1][0].set_ylabel("adversarial")
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, out)


def plot_scene_grid(
    images: Any,
    boxes: list[Any],
    labels: list[Any],
    semantic: Any,
    classes: Sequence[str],
    out: Path,
) -> Path:
    """Scenes with their labelled boxes (top of each pair) above their semantic masks (one
    colour per class, black background): ``images`` (N, 3, S, S) uint8, ``boxes[i]`` the
    (M_i, 4) xyxy boxes of image i, ``labels[i]`` their classes, ``semantic`` (N, S, S)."""
    import matplotlib

    n = len(images)
    cols = min(n, 8)
    rows = -(-n // cols)
    fig, axes = subplots(2 * rows, cols, figsize=(1.9 * cols, 3.9 * rows), squeeze=False)
    colours = matplotlib.colormaps["tab10"]
    palette = [(0.0, 0.0, 0.0), *(colours(c % 10)[:3] for c in range(len(classes)))]
    for ax in axes.flat:
        ax.set_axis_off()
    for i in range(n):
        top, bottom = axes[2 * (i // cols)][i % cols], axes[2 * (i // cols) + 1][i % cols]
        top.imshow(images[i].transpose(1, 2, 0))
        for (x0, y0, x1, y1), c in zip(boxes[i], labels[i], strict=True):
            edge = colours(int(c) % 10)
            top.add_patch(
                matplotlib.patches.Rectangle(
                    (x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color=edge, lw=1.2
                )
            )
            top.text(x0, y0 - 1, classes[int(c)], color="white", fontsize=5.5,
                     bbox={"facecolor": edge, "pad": 0.5, "lw": 0})  # fmt: skip
        bottom.imshow([[palette[v] for v in row] for row in semantic[i]])
    return save_figure(fig, out)


def plot_segmentation(image: torch.Tensor, pred: torch.Tensor, classes: Sequence[str], out: Path):
    """An image (3, S, S) in [0, 1] beside its predicted classes (S, S) drawn over it, with a
    legend of the classes found (class 0, the background, left undrawn)."""
    import matplotlib
    from matplotlib.patches import Patch

    colours = matplotlib.colormaps["tab10"]
    rgb = image.permute(1, 2, 0).numpy()
    overlay = rgb.copy()
    found = sorted(int(c) for c in pred.unique() if int(c) > 0)
    labels = pred.numpy()
    for c in found:
        colour = np.array(colours((c - 1) % 10)[:3])
        overlay[labels == c] = 0.35 * rgb[labels == c] + 0.65 * colour
    fig, (left, right) = subplots(1, 2, figsize=(6.4, 3.4))
    left.imshow(rgb)
    right.imshow(overlay)
    for ax, title in ((left, "image"), (right, "predicted classes")):
        ax.set_axis_off()
        ax.set_title(title, fontsize=9)
    handles = [Patch(color=colours((c - 1) % 10), label=classes[c]) for c in found]
    if handles:
        right.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    return save_figure(fig, out)


def _draw_boxes(ax, boxes, labels, classes, colours, scores=None, dashed=False) -> None:
    import matplotlib

    for k, ((x0, y0, x1, y1), c) in enumerate(zip(boxes.tolist(), labels.tolist(), strict=True)):
        edge = "white" if dashed else colours(int(c) % 10)
        ax.add_patch(
            matplotlib.patches.Rectangle(
                (x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color=edge, lw=1.1,
                ls="--" if dashed else "-",
            )
        )  # fmt: skip
        if not dashed:
            text = classes[int(c)] + ("" if scores is None else f" {float(scores[k]):.2f}")
            ax.text(x0, y0 - 1, text, color="white", fontsize=5.5,
                    bbox={"facecolor": edge, "pad": 0.5, "lw": 0})  # fmt: skip


def plot_detections(
    images: torch.Tensor,
    found: Sequence[Any],
    classes: Sequence[str],
    out: Path,
    truth: torch.Tensor | None = None,
    min_score: float = 0.3,
) -> Path:
    """Images (N, 3, S, S) in [0, 1] with their detections (``found[i]``: boxes, scores,
    labels) scoring at least ``min_score``, each box labelled with its class and score; with
    ``truth`` (N, K, 5), the true boxes are drawn dashed in white beneath."""
    import matplotlib

    colours = matplotlib.colormaps["tab10"]
    n = len(images)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = subplots(rows, cols, figsize=(2.6 * cols, 2.7 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i in range(n):
        ax = axes[i // cols][i % cols]
        ax.imshow(images[i].permute(1, 2, 0).clamp(0, 1).numpy())
        if truth is not None:
            rows_i = truth[i][truth[i][:, 4] >= 0]
            _draw_boxes(ax, rows_i[:, :4], rows_i[:, 4].long(), classes, colours, dashed=True)
        boxes, scores, labels = (t[found[i].scores >= min_score] for t in found[i])
        _draw_boxes(ax, boxes, labels, classes, colours, scores)
    if truth is not None:
        fig.suptitle(
            f"detections scoring >= {min_score} (solid) and ground truth (dashed)", fontsize=9
        )
    return save_figure(fig, out)


def plot_pr_curves(curves: dict, ap: dict, out: Path) -> Path:
    """Each class's precision against recall (``curves``: test_pr.json's recall and
    per-class precision), labelled with its AP."""
    import matplotlib

    colours = matplotlib.colormaps["tab10"]
    fig, ax = subplots(figsize=(6.4, 4.4))
    for i, (name, precision) in enumerate(curves["precision"].items()):
        value = ap.get(name)
        label = f"{name} (AP {value:.3f})" if value is not None else f"{name} (absent)"
        ax.plot(curves["recall"], precision, color=colours(i % 10), label=label, lw=1.2)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"precision-recall at IoU {curves['iou']} (AP: mean over IoU .5:.95)", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    return save_figure(fig, out)


def plot_captioned_scenes(
    images: torch.Tensor, captions: Sequence[Sequence[str]], out: Path
) -> Path:
    """Scenes (N, 3, S, S) uint8 or [0, 1], one per row, each beside its captions (one per
    line)."""
    fig, axes = subplots(
        len(images),
        2,
        figsize=(8.0, 1.3 * len(images)),
        squeeze=False,
        gridspec_kw={"width_ratios": [1, 5], "wspace": 0.04},
    )
    for ax in axes.flat:
        ax.set_axis_off()
    for row, image, lines in zip(axes, images, captions, strict=True):
        picture = image.float() / 255 if image.dtype == torch.uint8 else image
        row[0].imshow(picture.permute(1, 2, 0).clamp(0, 1).numpy())
        row[1].text(0, 0.5, "\n".join(lines), fontsize=8, va="center", ha="left")
    return save_figure(fig, out)


def plot_clip_strips(clips: np.ndarray, titles: Sequence[str], out: Path, every: int = 2) -> Path:
    """Clips (N, T, 1, S, S) uint8, one per row, every ``every``-th frame across, each row
    titled (its class)."""
    shown = range(0, clips.shape[1], every)
    fig, axes = subplots(
        len(clips), len(shown), figsize=(0.9 * len(shown), 1.05 * len(clips)), squeeze=False
    )
    for row, clip, title in zip(axes, clips, titles, strict=True):
        for ax, t in zip(row, shown, strict=True):
            ax.imshow(clip[t, 0], cmap="gray", vmin=0, vmax=255)
            ax.set_axis_off()
        row[0].set_title(title, fontsize=8, loc="left")
    return save_figure(fig, out)


def save_gif(frames: Sequence[np.ndarray], out: Path, ms: int) -> Path:
    """An animated GIF (looping, ``ms`` milliseconds a frame) of (H, W) or (H, W, 3) uint8
    frames, creating its folder."""
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    out.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(out, save_all=True, append_images=images[1:], duration=ms, loop=0)
    return out


def save_clip_gif(clips: np.ndarray, out: Path, columns: int = 4, ms: int = 120) -> Path:
    """Clips (N, T, 1, S, S) uint8 playing side by side in an animated GIF, ``columns`` to a
    row, 2 white pixels apart."""
    n, t, _, s, _ = clips.shape
    rows, gap = -(-n // columns), 2
    grid = np.full((t, rows * (s + gap) - gap, min(n, columns) * (s + gap) - gap), 255, np.uint8)
    for i in range(n):
        top, left = (i // columns) * (s + gap), (i % columns) * (s + gap)
        grid[:, top : top + s, left : left + s] = clips[i, :, 0]
    return save_gif(list(grid), out, ms)


def plot_caption_attention(
    image: torch.Tensor, words: Sequence[str], alphas: torch.Tensor, out: Path
) -> Path:
    """Show-Attend-Tell's picture: the image (3, S, S) in [0, 1], then for each word the image
    lit by its attention weights (words, h·w), upsampled: bright where the decoder looked."""
    import torch.nn.functional as F

    side = int(round(alphas.shape[-1] ** 0.5))
    size = image.shape[-1]
    maps = alphas.reshape(len(words), 1, side, side).float()
    maps = F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    columns = min(6, len(words) + 1)
    rows = -(-(len(words) + 1) // columns)
    fig, axes = subplots(rows, columns, figsize=(1.6 * columns, 1.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    rgb = image.permute(1, 2, 0).numpy()
    axes[0, 0].imshow(rgb)
    axes[0, 0].set_title("image", fontsize=8)
    for k, (word, weights) in enumerate(zip(words, maps, strict=True), start=1):
        ax = axes.flat[k]
        light = (weights / weights.max().clamp(min=1e-12)).numpy()[..., None]
        ax.imshow(rgb * (0.15 + 0.85 * light))
        ax.set_title(word, fontsize=8)
    return save_figure(fig, out)


def plot_alignment(
    source: Sequence[str], target: Sequence[str], weights: torch.Tensor, out: Path
) -> Path:
    """Bahdanau et al.'s alignment picture: the (target, source) attention weights as a grey
    matrix, a row per written token and a column per source token (white: all weight)."""
    weights = weights.float().numpy()
    fig, ax = subplots(figsize=(1.0 + 0.3 * len(source), 1.0 + 0.3 * len(target)))
    ax.imshow(weights, cmap="gray", vmin=0, vmax=max(float(weights.max()), 1e-12))
    ax.set_xticks(range(len(source)), [repr(s)[1:-1] for s in source], rotation=90, fontsize=7)
    ax.set_yticks(range(len(target)), [repr(t)[1:-1] for t in target], fontsize=7)
    ax.set_xlabel("source tokens")
    ax.set_ylabel("written tokens")
    return save_figure(fig, out)

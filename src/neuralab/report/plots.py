"""PNG plots of a run: learning curves and the test confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from neuralab.report.runs import read_jsonl  # noqa: E402


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in records if key in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_curves(run_dir: Path) -> Path:
    """Loss and accuracy against the optimizer step, train and val, from metrics.jsonl."""
    records = read_jsonl(run_dir / "metrics.jsonl")
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for split, style in (("train", "-"), ("val", "o-")):
        for ax, metric in ((ax_loss, "loss"), (ax_acc, "acc")):
            steps, values = _series(records, f"{split}/{metric}")
            if steps:
                ax.plot(steps, values, style, label=split, markersize=3)
    ax_loss.set(xlabel="step", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="step", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    out = run_dir / "plots" / "curves.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_confusion(confusion: torch.Tensor, classes: Sequence[str], out: Path) -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: predicted), with counts."""
    cm = confusion.double()
    rates = cm / cm.sum(dim=1, keepdim=True).clamp(min=1)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 0.6 + 0.6 * n))
    ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            color = "white" if rates[i, j] > 0.5 else "black"
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title="test confusion matrix")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out

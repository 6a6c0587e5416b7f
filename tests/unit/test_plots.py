"""The training-curve plot draws every curve a run logged."""

from __future__ import annotations

import json

from neuralab import plots


def test_curves_include_knn_and_robust_accuracy(tmp_path, monkeypatch):
    """Besides train/val loss and accuracy, a pretraining run's val/knn_acc and an
    adversarially trained run's val/robust_acc appear as their own labelled lines."""
    records = [
        {"step": 10, "train/loss": 2.0, "train/acc": 0.3},
        {"step": 10, "val/loss": 1.9, "val/acc": 0.4, "val/knn_acc": 0.5, "val/robust_acc": 0.2},
        {"step": 20, "val/loss": 1.5, "val/acc": 0.6, "val/knn_acc": 0.7, "val/robust_acc": 0.3},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    drawn = {}

    def capture(fig, out):
        ax_loss, ax_acc = fig.axes
        drawn["acc"] = {line.get_label(): list(line.get_ydata()) for line in ax_acc.lines}
        drawn["loss"] = {line.get_label(): list(line.get_ydata()) for line in ax_loss.lines}
        return out

    monkeypatch.setattr(plots, "save_figure", capture)
    plots.plot_curves(tmp_path)
    assert drawn["loss"] == {"train": [2.0], "val": [1.9, 1.5]}
    assert drawn["acc"] == {
        "train": [0.3],
        "val": [0.4, 0.6],
        "val kNN (pretraining)": [0.5, 0.7],
        "val PGD": [0.2, 0.3],
    }


def test_curves_mark_the_best_checkpoint(tmp_path):
    """A dotted vertical line at results.json's best_step, on both panels, says which
    checkpoint `test` uses."""
    records = [{"step": s, "val/loss": 1 / s, "val/acc": 0.5} for s in (10, 20, 30)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "results.json").write_text(json.dumps({"best_step": 20}))
    fig = plots.curves_figure(tmp_path)
    for ax in fig.axes:
        marks = [line for line in ax.lines if line.get_label() == "best (step 20)"]
        assert len(marks) == 1 and list(marks[0].get_xdata()) == [20, 20]

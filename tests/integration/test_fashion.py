"""A short run of the fashion_cnn preset on the real Fashion-MNIST (marked `data`)."""

from __future__ import annotations

import pytest
from conftest import require_dataset

from neuralab import config
from neuralab.train import fit, new_run_dir
from neuralab.train import test as run_test


@pytest.mark.data
def test_fashion_cnn_preset_learns_on_real_data(tmp_path):
    """200 steps of the real preset (about a half epoch) already beat 80% on the real test
    split, far above the 10% of chance: data, model, loop and test step fit together."""
    require_dataset("fashion-mnist")
    cfg = config.load("fashion_cnn", ["train.max_steps=200", "train.log_every=50"])
    run_dir = new_run_dir(tmp_path / "run", cfg)
    summary = fit(cfg, run_dir, progress=False)
    assert summary["train/examples"] == 54000 and summary["val/examples"] == 6000
    result = run_test(run_dir)
    assert result["test/examples"] == 10000
    assert result["test/acc"] > 0.80, result["test/acc"]
    assert set(result["test/per_class_acc"]) >= {"T-shirt/top", "Ankle boot"}

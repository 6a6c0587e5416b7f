"""Splitting a batch: gradient accumulation gives the update of the whole batch; torch.compile
gives the eager model's loss and leaves no trace in checkpoints; the one-line errors."""

from __future__ import annotations

import pytest
import torch

from neuralab import config
from neuralab.errors import UserError
from neuralab.train import checkpoint, fit, load_model, new_run_dir

pytestmark = pytest.mark.usefixtures("one_thread")

# no BatchNorm (its statistics are per micro-batch) and no dropout: the update is a function
# of the batch alone, so splitting the batch must not change it
MLP = ["data.name=digits", "model.name=mlp", "model.hidden=64", "model.dropout=0", "seed=3"]


def _train(tmp_path, name: str, overrides: list[str]) -> dict[str, torch.Tensor]:
    cfg = config.load(None, MLP + overrides)
    run_dir = new_run_dir(tmp_path / name, cfg)
    summary = fit(cfg, run_dir, progress=False)
    assert summary["status"] == "finished"
    return checkpoint.read(run_dir, "last").model


@pytest.mark.parametrize("optim, atol", [("sgd", 1e-6), ("adamw", 1e-5)])
def test_accumulation_equals_the_large_batch(tmp_path, optim, atol):
    """30 steps of batch 96 in 4 micro-batches of 24 (one backward each, the losses weighted
    by their share) end at the parameters of 30 steps of batch 96 in one piece, to float
    rounding: the summed micro-batch gradients are the large batch's gradient. (AdamW divides
    by sqrt(v), which magnifies the rounding of small gradients: measured 1.0e-6 here.)"""
    steps = ["train.batch_size=96", "train.max_steps=30", f"optim.name={optim}", "optim.lr=0.05"]
    whole = _train(tmp_path, "whole", steps)
    split = _train(tmp_path, "split", [*steps, "train.accum_steps=4"])
    for key in whole:
        torch.testing.assert_close(split[key], whole[key], rtol=0, atol=atol)


def test_accumulation_errors_are_one_line(tmp_path):
    """A batch that does not split into equal micro-batches, or accumulation over carried
    hidden states, is refused before any step with a message naming the keys."""
    cfg = config.load(None, [*MLP, "train.batch_size=50", "train.accum_steps=4"])
    with pytest.raises(UserError, match="train.batch_size=50 must split evenly"):
        fit(cfg, new_run_dir(tmp_path / "a", cfg), progress=False)
    with pytest.raises(UserError, match="'train.accum_steps' must be in \\[1, inf\\)"):
        config.load(None, [*MLP, "train.accum_steps=0"])  # refused with the config
    lstm = ["model.name=lstm", "data.batching=streams", "train.accum_steps=2"]
    cfg = config.load(None, ["data.name=tinyshakespeare", *lstm])
    with pytest.raises(UserError, match="data.batching=streams"):
        fit(cfg, new_run_dir(tmp_path / "c", cfg), progress=False)


def test_compiled_training_matches_eager_and_saves_eager_keys(tmp_path):
    """torch.compile (inductor) trains to the eager run's parameters within float tolerance
    (fused kernels round differently); its checkpoint has the eager model's keys, no
    '_orig_mod.' prefix, and loads into a plain eager model that predicts like the run."""
    steps = ["train.batch_size=64", "train.max_steps=8", "optim.name=sgd", "optim.lr=0.05"]
    eager = _train(tmp_path, "eager", steps)
    compiled = _train(tmp_path, "compiled", [*steps, "train.compile=true"])
    assert compiled.keys() == eager.keys()
    assert not any("_orig_mod" in k for k in compiled)
    for key in eager:
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-4, atol=1e-5)
    model = load_model(tmp_path / "compiled", "last")
    x = torch.rand(5, 1, 8, 8)
    assert type(model).__name__ == "MLP" and model(x).shape == (5, 10)


def test_devices_and_precisions_are_checked(tmp_path):
    """float16 autocast needs CUDA's gradient scaler and a GPU, so asking for it on a CPU (or
    for train.device=cuda where there is no GPU) is a one-line error before any step; the
    summary says which device and precision a run used."""
    cfg = config.load(None, [*MLP, "train.precision=fp16", "train.device=cpu"])
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        fit(cfg, new_run_dir(tmp_path / "a", cfg), progress=False)
    if not torch.cuda.is_available():
        cfg = config.load(None, [*MLP, "train.device=cuda"])
        with pytest.raises(UserError, match="no CUDA GPU"):
            fit(cfg, new_run_dir(tmp_path / "b", cfg), progress=False)
    cfg = config.load(None, [*MLP, "train.max_steps=2", "train.device=cpu", "train.precision=bf16"])
    summary = fit(cfg, new_run_dir(tmp_path / "c", cfg), progress=False)
    assert summary["train/device"] == "cpu" and summary["train/precision"] == "bf16"

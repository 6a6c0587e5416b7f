"""Data parallelism with torchrun, as a user starts it: 2 processes on gloo equal 1 process at
the same global batch; a 2-process run resumes exactly; rank 0 alone writes and reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from neuralab.train import checkpoint

pytestmark = pytest.mark.slow

# no BatchNorm (per-rank statistics) and no dropout: the update is a function of the global
# batch alone. A constant learning rate, so that stopping at 25 and resuming to 50 steps
# follows the same schedule as 50 straight.
MLP = [
    "data.name=digits",
    "model.name=mlp",
    "model.hidden=64",
    "model.dropout=0",
    "train.batch_size=64",
    "train.log_every=5",
    "optim.name=sgd",
    "optim.lr=0.05",
    "sched.name=constant",
]


def train(cwd, *args: str, processes: int = 1) -> subprocess.CompletedProcess:
    launcher = ["-m", "torch.distributed.run", f"--nproc-per-node={processes}"]
    launcher += ["--standalone"]  # a free port on localhost
    cmd = [sys.executable, *(launcher if processes > 1 else []), "-m", "neuralab", "train"]
    env = {**os.environ, "NEURALAB_CACHE": str(cwd / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*cmd, *args, "--json", "--no-progress"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def params(run_dir) -> dict[str, torch.Tensor]:
    return checkpoint.read(run_dir, "last").model


def test_two_processes_equal_one_at_the_same_global_batch(tmp_path):
    """50 SGD steps of global batch 64: 2 gloo processes x 32 images end within 1e-5 of one
    process x 64 (the all-reduced gradient is the global batch's); rank 0 alone prints the
    one JSON object, writes results.json and one metrics log; the logged training loss is
    that of the global batch, as with one process."""
    steps = [*MLP, "train.max_steps=50"]
    one = train(tmp_path, "fashion_mlp", *steps, "--run-dir", "one")
    two = train(tmp_path, "fashion_mlp", *steps, "--run-dir", "two", processes=2)
    result = json.loads(two.stdout)  # exactly one object on stdout: rank 0's
    assert result["train/processes"] == 2 and result["train/steps"] == 50
    assert json.loads(one.stdout)["train/processes"] == 1
    a, b = params(tmp_path / "one"), params(tmp_path / "two")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-5)
    logs = [
        [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        for run in ("one", "two")
    ]
    losses = [[r["train/loss"] for r in log if "train/loss" in r] for log in logs]
    assert len(losses[0]) == len(losses[1]) == 10
    assert losses[1] == pytest.approx(losses[0], abs=1e-4)


def test_two_process_run_resumes_exactly(tmp_path):
    """25 steps with 2 processes, then --resume to 50 with 2 processes, gives bit for bit the
    parameters of 50 steps straight with 2 processes: every rank reads the checkpoint rank 0
    wrote, and the data order is a function of the step."""
    train(tmp_path, "fashion_mlp", *MLP, "train.max_steps=50", "--run-dir", "straight", processes=2)
    train(tmp_path, "fashion_mlp", *MLP, "train.max_steps=25", "--run-dir", "resumed", processes=2)
    train(tmp_path, "--resume", "resumed", "train.max_steps=50", processes=2)
    a, b = params(tmp_path / "straight"), params(tmp_path / "resumed")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_batchnorm_under_two_cpu_processes_is_refused(tmp_path):
    """BatchNorm normalises by its process's share of the batch, so two processes would not
    equal one; SyncBatchNorm needs GPUs, so on CPUs the run is a one-line error (exit 2),
    not a silently different training."""
    launcher = ["-m", "torch.distributed.run", "--nproc-per-node=2", "--standalone"]
    cnn = ["data.name=digits", "model.widths=8,16", "train.max_steps=2"]
    proc = subprocess.run(
        [sys.executable, *launcher, "-m", "neuralab", "train", "digits_cnn", *cnn, "--no-progress"],
        cwd=tmp_path,
        env={**os.environ, "NEURALAB_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0  # torchrun reports its workers' exit status 2 as a failure
    assert "neuralab: error: this model has BatchNorm" in proc.stderr

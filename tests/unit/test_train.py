"""The training loop: exact resume, divergence handling, run directories, schedules."""

from __future__ import annotations

import json
import math
import os
import signal

import pytest
import torch

from neuralab import config
from neuralab.errors import UserError
from neuralab.train import checkpoint, fit, load_model, new_run_dir
from neuralab.train.optim import lr_factor

# A tiny but complete set-up: augmentation, dropout, EMA and label smoothing all draw
# on RNG state or carry state, so resume must restore every piece to be exact.
TINY = [
    "data.name=digits",
    "model.name=cnn",
    "model.widths=8,16",
    "model.dropout=0.2",
    "train.batch_size=32",
    "train.log_every=1",
    "train.ema=0.9",
    "train.label_smoothing=0.1",
]


def _params(run_dir, which="last"):
    return checkpoint.read(run_dir, which).model


def _run(tmp_path, name, overrides, **kw):
    cfg = config.load(None, TINY + overrides)
    run_dir = new_run_dir(tmp_path / name, cfg)
    return cfg, run_dir, fit(cfg, run_dir, progress=False, **kw)


def _interrupt_at(step):
    """A callback that sends this process SIGINT once the record of ``step`` is logged,
    as a user pressing Ctrl-C would; the loop stops at the step boundary."""

    def cb(record):
        if record["step"] == step and "train/loss" in record:
            os.kill(os.getpid(), signal.SIGINT)

    return cb


def straight_and_resumed(tmp_path, cfg, stop_at: int) -> tuple[dict, dict]:
    """The summaries of ``cfg`` run straight and run to ``stop_at``, interrupted (Ctrl-C) and
    resumed, after checking that both end with identical parameters (BatchNorm statistics
    included): the exact-resume check every kind of run passes."""
    straight, stopped = new_run_dir(tmp_path / "a", cfg), new_run_dir(tmp_path / "b", cfg)
    done = fit(cfg, straight, progress=False)
    part = fit(cfg, stopped, progress=False, callbacks=[_interrupt_at(stop_at)])
    assert part["status"] == "interrupted"
    resumed = fit(cfg, stopped, resume=True, progress=False)
    a, b = checkpoint.read(straight, "last").model, checkpoint.read(stopped, "last").model
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return done, resumed


@pytest.mark.parametrize("stop_at", [45, 80])  # mid-epoch (40 steps/epoch), and at an epoch end
def test_resume_is_bit_identical(tmp_path, stop_at):
    """2N steps straight == N steps, Ctrl-C, --resume, the rest: identical parameters,
    EMA weights, optimizer state and metrics log on the CPU."""
    steps = ["train.max_steps=90"]
    _, straight, done = _run(tmp_path, "straight", steps)
    cfg, stopped, part = _run(tmp_path, "stopped", steps, callbacks=[_interrupt_at(stop_at)])
    assert part["status"] == "interrupted" and part["train/steps"] == stop_at
    resumed = fit(cfg, stopped, resume=True, progress=False)
    assert resumed["status"] == "finished" and resumed["train/steps"] == 90 == done["train/steps"]

    a, b = checkpoint.read(straight, "last"), checkpoint.read(stopped, "last")
    assert a.model.keys() == b.model.keys()
    for key in a.model:
        assert torch.equal(a.model[key], b.model[key]), key
    for key in a.ema:
        assert torch.equal(a.ema[key], b.ema[key]), key
    sa, sb = a.state["optimizer"]["state"], b.state["optimizer"]["state"]
    for i in sa:
        assert torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"])
    log = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    log2 = [json.loads(line) for line in (stopped / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [r["step"] for r in log2]
    # the same records, values included: the first training loss logged after the resume is
    # the mean over the same steps as in the straight run (it once averaged only the steps
    # after the resume)
    timing = ("train_s", "wall_s")
    for r, r2 in zip(log, log2, strict=True):
        assert {k: v for k, v in r.items() if k not in timing} == {
            k: v for k, v in r2.items() if k not in timing
        }
    assert a.meta["progress"]["best_step"] == b.meta["progress"]["best_step"]


def test_a_resume_between_log_records_logs_the_same_means(tmp_path):
    """Stopped at a validation (step 20) between two log records (every 7 steps), the resumed
    run's next train/loss and train/acc are means over the same steps 15-21 as the straight
    run's: the running sums are in the checkpoint."""

    def stop_at_validation(record):
        if record["step"] == 20 and "val/acc" in record:
            os.kill(os.getpid(), signal.SIGINT)

    steps = ["train.max_steps=28", "train.log_every=7", "train.val_every=10"]
    _, straight, _ = _run(tmp_path, "straight", steps)
    cfg, stopped, part = _run(tmp_path, "stopped", steps, callbacks=[stop_at_validation])
    assert part["train/steps"] == 20
    fit(cfg, stopped, resume=True, progress=False)
    logs = [
        [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        for run in (straight, stopped)
    ]
    trained = [[(r["step"], r["train/loss"], r["train/acc"]) for r in log if "train/loss" in r]
               for log in logs]  # fmt: skip
    assert trained[0] == trained[1] and [t[0] for t in trained[0]] == [7, 14, 21, 28]


def test_divergence_stops_with_clear_message_and_keeps_last_good_checkpoint(tmp_path):
    """A NaN loss stops the run with a one-line UserError; the checkpoint on disk is finite."""
    cfg, run_dir, _ = _run(tmp_path, "ok", ["train.max_steps=40"])  # one epoch, checkpointed
    before = _params(run_dir)
    diverging = config.load(
        run_dir / "config.toml", ["train.max_steps=80", "optim.lr=1e30", "train.ema=0"]
    )
    # resume the healthy run with an absurd learning rate: it must blow up
    (run_dir / "config.toml").write_text(config.to_toml(diverging))
    with pytest.raises(UserError, match="loss became (nan|inf).*last good checkpoint"):
        fit(diverging, run_dir, resume=True, progress=False)
    after = _params(run_dir)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())


def test_existing_run_directory_is_never_overwritten(tmp_path):
    cfg = config.load(None, TINY)
    run_dir = new_run_dir(tmp_path / "run", cfg)
    (run_dir / "precious.txt").write_text("keep me")
    with pytest.raises(UserError, match="already exists.*--resume"):
        new_run_dir(run_dir, cfg)
    assert (run_dir / "precious.txt").read_text() == "keep me"


def test_run_directory_contents_and_best_model(tmp_path):
    """A finished run has the files other tools rely on; load_model gives the best weights."""
    cfg, run_dir, summary = _run(tmp_path, "run", ["train.max_steps=40", "train.ema=0"])
    for name in ("config.toml", "metrics.jsonl", "results.json"):
        assert (run_dir / name).is_file()
    assert any((run_dir / "tensorboard").iterdir())
    assert (run_dir / "checkpoints" / "best" / "model.safetensors").is_file()
    assert {"val/acc", "val/loss", "train/wall_s", "train/steps", "train/threads"} <= set(summary)
    model = load_model(run_dir)
    assert not model.training
    best = checkpoint.read(run_dir, "best").model
    for key, value in model.state_dict().items():
        assert torch.equal(value, best[key])


def test_early_stopping(tmp_path):
    """With patience 1 and validation every step, training stops before max_steps once the
    monitored metric fails to improve."""
    _, _, summary = _run(
        tmp_path,
        "es",
        ["train.max_steps=200", "train.val_every=1", "train.early_stopping=1", "optim.lr=1e-5"],
    )
    assert summary["status"] == "early-stopped" and summary["train/steps"] < 200


def test_grad_clip_and_sgd_run(tmp_path):
    _, _, summary = _run(
        tmp_path,
        "sgd",
        ["train.max_steps=5", "optim.name=sgd", "train.grad_clip=1.0", "sched.name=onecycle"],
    )
    assert summary["status"] == "finished" and math.isfinite(summary["val/loss"])


@pytest.mark.parametrize("name", ["cosine", "onecycle", "constant"])
def test_lr_schedules(name):
    """Warm-up rises, the schedule peaks at the base rate and ends near its floor."""
    sched = config.SchedConfig(name=name, warmup=0.1)
    f = [lr_factor(sched, s, 100) for s in range(100)]
    assert max(f) == pytest.approx(1.0, abs=1e-3)
    if name == "constant":
        assert set(f) == {1.0}
    else:
        assert f[0] < 0.2 and f[-1] < 0.01
        peak = f.index(max(f))
        assert all(a <= b + 1e-12 for a, b in zip(f[:peak], f[1 : peak + 1], strict=True))
        assert all(a >= b - 1e-12 for a, b in zip(f[peak:], f[peak + 1 :], strict=False))


def test_a_raising_callback_leaves_no_open_writer(tmp_path):
    """A callback that raises (a sweep prunes a trial that way) ends the run with its
    exception, and the metrics log and its TensorBoard writer are closed anyway: no writer
    thread is left running, and what was logged is on disk."""
    import threading

    def prune(record):
        if record["step"] == 3:
            raise RuntimeError("pruned")

    def threads() -> list[str]:  # tqdm's one monitor thread lives as long as the process
        return sorted(t.name for t in threading.enumerate() if t.name != "tqdm_monitor")

    before = threads()
    cfg = config.load(None, [*TINY, "train.max_steps=10"])
    run_dir = new_run_dir(tmp_path / "pruned", cfg)
    with pytest.raises(RuntimeError, match="pruned"):
        fit(cfg, run_dir, progress=False, callbacks=[prune])
    assert threads() == before
    steps = [
        json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [1, 2, 3]

"""The training loop: one function, readable in one sitting, for every kind of run.

prepare data -> design the model -> train, validating as it goes -> keep the best and last
checkpoints. What is specific to a kind of run (its data, model, loss and metrics) comes from
its task (``neuralab.tasks``); the loop knows steps only. Testing is a separate step
(``neuralab.train.evaluate``) so that the test split is touched once, by the best checkpoint.

Exact resume: the data order of epoch e is a permutation drawn from (seed, e), the
augmentation of step s from (seed, s), the learning rate is a function of the step, and the
checkpoint holds the weights, the optimizer, every RNG state and the step. So N steps straight
and N/2 + resume + N/2 give bit-identical parameters on the CPU.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from neuralab import config as config_lib
from neuralab.config import RunConfig
from neuralab.errors import UserError
from neuralab.models import model_config
from neuralab.runs import (
    Progress,
    lock_run_dir,
    make_run_dir,
    release_run_dir,
    set_threads,
    write_atomic,
)
from neuralab.tasks import build_task
from neuralab.train import checkpoint, distributed
from neuralab.train.metrics import MetricsLogger
from neuralab.train.trainer import StopRequest, Trainer, check_parallel

# Called with each metrics record. Callbacks observe; one may stop the run by raising (a
# sweep prunes a trial that way), and the loop then closes its progress bar and log.
Callback = Callable[[dict[str, Any]], None]


def new_run_dir(
    run_dir: str | Path | None, cfg: RunConfig, name: str | None = None, command: str = ""
) -> Path:
    """Create a fresh run directory holding ``cfg``; an existing non-empty one is never
    overwritten. ``command`` continues such a run (default: the command of the run's kind,
    ``neuralab train`` or ``neuralab pretrain``)."""
    command = command or build_task(cfg).command
    if cfg.train.init_from:
        check_init(cfg)
    default = name or f"{cfg.data.name}_{cfg.model.name}"
    return make_run_dir(run_dir, default, config_lib.to_toml(cfg), command)


# options that may differ between a run and the run it starts from (train.init_from)
FREE_WHEN_FINE_TUNING = ("vocab_size", "dropout", "attn_impl")


def check_init(cfg: RunConfig) -> None:
    """Refuse ``train.init_from`` before a run directory exists: a run that is not there, or
    whose model differs from this one in an option both have (its width, depth, heads...),
    other than those the data sets or fine-tuning may change."""
    source = cfg.train.init_from
    meta = checkpoint.read(Path(source), "best", with_state=False).meta["model"]
    ours = asdict(model_config(cfg.model.name, **cfg.model.options))
    theirs = meta["config"]
    differ = [
        f"{key}={theirs[key]!r} there, {ours[key]!r} here"
        for key in theirs
        if key in ours
        and key not in FREE_WHEN_FINE_TUNING
        and json.dumps(theirs[key]) != json.dumps(ours[key])
    ]
    if differ:
        raise UserError(
            f"train.init_from={source}: its {meta['name']} differs from this {cfg.model.name} "
            f"({'; '.join(differ)}); give both the same architecture options"
        )


def fit(
    cfg: RunConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    callbacks: Iterable[Callback] = (),
) -> dict[str, Any]:
    """Train ``cfg`` in ``run_dir`` (created by ``new_run_dir``, or an existing run to resume).

    Returns the summary that is also written to ``results.json`` (without test metrics; those
    come from ``evaluate.test``). ``summary["status"]`` is "finished", "early-stopped" or
    "interrupted".
    """
    tc = cfg.train
    world = distributed.init()
    if world.main:
        lock_run_dir(run_dir)  # the one writer of this run directory while it trains
    threads = set_threads(tc.threads)
    task = build_task(cfg)
    check_parallel(tc, world)
    task.check(cfg, world.size)
    # 1. prepare data and 2. design the model (the test split is not loaded here)
    setup = task.prepare(cfg, run_dir, resume)
    if tc.init_from and not resume:  # a resumed run's checkpoint holds its own weights
        setup.sizes["train/init_tensors"] = checkpoint.start_from(setup.model, tc.init_from)
    trainer = Trainer(cfg, task, setup, run_dir, world)
    state = trainer.restore(run_dir) if resume else Progress()
    total, per_epoch = trainer.total_steps, setup.batches.steps_per_epoch
    logger = MetricsLogger(run_dir, start_step=state.step) if world.main else None

    def record(values: dict[str, Any]) -> None:
        if logger is None:
            return
        epoch = round(state.step / per_epoch, 4)
        rec = {"step": state.step, "epoch": epoch, "train_s": round(state.train_s, 3), **values}
        logger.log(rec)
        for cb in callbacks:
            cb(rec)

    # 3. train, validating as we go
    status, meter = "finished", trainer.meter
    desc, show = f"{cfg.data.name}/{cfg.model.name}", progress and world.main
    bar = tqdm(total=total, initial=state.step, disable=not show, desc=desc, unit="step")
    started = time.perf_counter() - state.wall_s
    closing_log = contextlib.closing(logger) if logger else contextlib.nullcontext()
    with StopRequest() as stop, contextlib.closing(bar), closing_log:
        while state.step < total:
            step_started = time.perf_counter()
            result = trainer.step(state.step, stop.requested)
            state.step += 1
            bar.update()
            meter.add(result)
            state.train_s += time.perf_counter() - step_started
            if state.step % tc.log_every == 0 or state.step == total:
                values = meter.pop(trainer.lr(state.step - 1))
                record(values)
                bar.set_postfix(loss=f"{values['train/loss']:.3f}", refresh=False)
            validate = trainer.validation_due(state.step)
            checkpoint_due = tc.checkpoint_every and state.step % tc.checkpoint_every == 0
            if validate or checkpoint_due:
                state.wall_s = time.perf_counter() - started
            if validate:
                improved, stale = trainer.validate(state, record)
                trainer.save(state, best=improved)
                best = f"{state.best:.4f}" if state.best is not None else "-"
                bar.set_postfix({f"best {tc.monitor}": best})
                if stale:
                    status = "early-stopped"
                    break
            elif checkpoint_due:
                trainer.save(state, best=False)
            # Ctrl-C on any rank stops every rank at the same step: the one whose all-reduce
            # first carried it
            if result.stop if world.distributed else stop.requested:
                if not (validate or checkpoint_due):
                    state.wall_s = time.perf_counter() - started
                    trainer.save(state, best=False)
                status = "interrupted"
                break
    summary = trainer.summary(state, status, threads, setup)
    if status == "interrupted":
        summary["stop_signal"] = stop.signal.name  # SIGINT (Ctrl-C) or SIGTERM
    if world.main:
        write_atomic(run_dir / "results.json", json.dumps(summary, indent=2) + "\n")
        release_run_dir(run_dir)
    return summary

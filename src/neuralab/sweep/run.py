"""Run a sweep: workers that take trials from one Optuna study until it holds ``trials``.

Each trial is an ordinary run directory, ``runs/<sweep>/trial-<n>/``, trained by the one
training loop; a callback reports the sweep metric to Optuna after every validation, so
the pruner can stop a hopeless trial early. The objective is the best validation value
of the run; the test split is never touched.

The budget is the study's total: a worker reserves the next trial (an enqueued WAITING
trial) under a lock only while the study holds fewer than ``trials`` trials of any state,
so any number of workers, on any number of machines, together run exactly that many.
Optuna's relational storage gives each trial one number and one worker; its heartbeat
marks the RUNNING trial of a dead worker FAILED (a failed trial counts towards the budget).
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from neuralab.errors import UserError
from neuralab.sweep.space import Sweep, trial_config
from neuralab.sweep.storage import MEMORY, budget_lock, open_storage, shown

SIGNATURE = "neuralab_sweep"  # the study's user attribute that holds the sweep's definition


class TrialFailed(Exception):
    """A trial that failed for a reason of its own (e.g. its loss diverged): the sweep goes on."""


def sweep_dir(name: str) -> Path:
    return Path("runs") / name


def open_study(sweep: Sweep, url: str) -> optuna.Study:
    """Create the study, or join it if it exists with the same definition."""
    storage = open_storage(url, sweep.heartbeat_interval, sweep.grace_period)
    study = optuna.create_study(
        storage=storage, study_name=sweep.name, direction=sweep.direction, load_if_exists=True
    )
    stored = study.user_attrs.get(SIGNATURE)
    if stored is None:
        study.set_user_attr(SIGNATURE, sweep.signature())
        study.set_user_attr("heartbeat", [sweep.heartbeat_interval, sweep.grace_period])
    elif stored != sweep.signature():
        raise UserError(
            f"study {sweep.name!r} in {shown(url)} was started with another search space, "
            "metric or base config; give this sweep a new sweep.name or another --storage"
        )
    return study


def _sampler(sweep: Sweep, worker: int, seen: int) -> optuna.samplers.BaseSampler:
    """Seeded from (sweep.seed, worker, trials already in the study): one worker's sweep is
    repeatable, and workers (or a later run of the same sweep) never repeat each other's draws."""
    seed = int(np.random.SeedSequence([sweep.seed, worker, seen]).generate_state(1)[0])
    if sweep.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(sweep: Sweep) -> optuna.pruners.BasePruner:
    if sweep.pruner == "median":
        # after 5 finished trials, from the 2nd validation on: below the median of the
        # other trials at the same validation -> pruned
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    return optuna.pruners.NopPruner()


def suggest(trial: optuna.Trial, sweep: Sweep) -> dict[str, Any]:
    values = {}
    for p in sweep.params:
        if p.choices:
            values[p.key] = trial.suggest_categorical(p.key, p.choices)
        elif p.integer:
            values[p.key] = trial.suggest_int(p.key, p.low, p.high, step=p.step, log=p.log)
        else:
            values[p.key] = trial.suggest_float(p.key, p.low, p.high, step=p.step, log=p.log)
    return values


def objective(trial: optuna.Trial, sweep: Sweep, threads: int, worker: int) -> float:
    """Train one trial as a normal run; the best validation value of ``sweep.metric``."""
    from neuralab.train import fit, new_run_dir

    cfg = trial_config(sweep, suggest(trial, sweep))
    if threads and not cfg.train.threads:
        cfg = replace(cfg, train=replace(cfg.train, threads=threads))
    run_dir = sweep_dir(sweep.name) / f"trial-{trial.number}"
    trial.set_user_attr("run_dir", str(run_dir))
    try:  # absolute: a trial's files stay where they belong if the working directory changes
        run_dir = new_run_dir(run_dir.absolute(), cfg)
    except UserError:
        raise UserError(
            f"{run_dir} already exists but is not trial {trial.number} of study {sweep.name!r}; "
            "move the old runs away or give the sweep another sweep.name"
        ) from None
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}#{worker}")
    print(f"trial {trial.number}: training in {run_dir} ...", file=sys.stderr, flush=True)
    sign = 1 if sweep.direction == "maximize" else -1
    seen: list[float] = []

    def report(record: dict[str, Any]) -> None:
        """Each validation's value to Optuna; this callback steers the run: when the pruner
        says so it stops the trial, by raising TrialPruned out of ``fit``."""
        if sweep.metric not in record:
            return
        seen.append(float(record[sweep.metric]))
        trial.report(seen[-1], len(seen))  # step = the n-th validation (epoch n by default)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at validation {len(seen)} (epoch {record['epoch']})")

    try:
        summary = fit(cfg, run_dir, progress=False, callbacks=[report])
    except UserError as err:  # e.g. a learning rate so high that the loss diverged
        trial.set_user_attr("error", str(err))
        raise TrialFailed(str(err)) from None
    if summary["status"] == "interrupted":
        raise KeyboardInterrupt
    if not seen:
        raise UserError(
            f"sweep.metric {sweep.metric} was never logged by {run_dir}; "
            "see its metrics.jsonl for the validation metrics this run measures"
        )
    return max(seen, key=lambda v: sign * v)


def _announce(study: optuna.Study, trial: FrozenTrial) -> None:
    params = " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items()
    )
    took = (trial.datetime_complete - trial.datetime_start).total_seconds()
    if trial.state == TrialState.COMPLETE:
        what = f"{trial.value:.4f}"
    elif trial.state == TrialState.PRUNED:
        steps = max(trial.intermediate_values, default=0)
        what = f"pruned at validation {steps}"
    else:
        what = f"failed: {trial.user_attrs.get('error', 'see the message above')}"
    print(f"trial {trial.number}: {what}  {params}  ({took:.1f} s)", file=sys.stderr, flush=True)


def work(
    sweep: Sweep,
    url: str,
    trials: int,
    *,
    worker: int = 0,
    threads: int = 0,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """Run trials of the sweep until its study holds ``trials``; returns the study.

    ``pruner`` replaces the sweep's own (any Optuna pruner, from Python).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(sweep, url)
    study.sampler = _sampler(sweep, worker, len(study.get_trials(deepcopy=False)))
    study.pruner = pruner or _pruner(sweep)
    while True:
        with budget_lock(url, sweep.name):
            if len(study.get_trials(deepcopy=False)) >= trials:
                return study
            study.enqueue_trial({})  # reserved: our next ask pops a WAITING trial
        study.optimize(
            lambda t: objective(t, sweep, threads, worker),
            n_trials=1,
            catch=(TrialFailed,),
            callbacks=[_announce],
        )


def _worker_main(sweep: Sweep, url: str, trials: int, worker: int, threads: int) -> None:
    try:
        work(sweep, url, trials, worker=worker, threads=threads)
    except UserError as err:
        print(f"neuralab: error: worker {worker}: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def check_request(url: str, trials: int, workers: int) -> None:
    if workers < 1 or trials < 1:
        raise UserError("--trials and --workers must be at least 1")
    if workers > 1 and url == MEMORY:
        raise UserError("--workers > 1 needs a shared storage: SQLite (the default) or PostgreSQL")


def run_sweep(sweep: Sweep, url: str, trials: int, workers: int = 1) -> optuna.Study:
    """Run ``workers`` worker processes (or this process, for one) until the study holds
    ``trials`` trials; returns the study."""
    check_request(url, trials, workers)
    if workers == 1:
        return work(sweep, url, trials)
    open_study(sweep, url)  # create it (or check it) once, before any worker starts
    threads = max(1, len(os.sched_getaffinity(0)) // workers)
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker_main, args=(sweep, url, trials, i, threads), daemon=False)
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:  # the workers got the Ctrl-C too and stop at their next step
        for p in procs:
            p.join()
        raise
    codes = [p.exitcode for p in procs]
    if any(codes):
        if 130 in codes:
            raise KeyboardInterrupt
        raise UserError(f"worker exit codes {codes}; see the messages above")
    return open_study(sweep, url)

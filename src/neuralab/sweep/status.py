"""Where a sweep stands: trial counts, the best trials, parameter importance, and two PNGs
(the objective trial by trial, and the importance of each parameter)."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from neuralab.errors import UserError
from neuralab.sweep.run import SIGNATURE
from neuralab.sweep.storage import fail_stale_trials, open_storage, shown, sqlite_path

TOP = 10  # best trials listed


def load(name: str, url: str) -> optuna.Study:
    """The study of sweep ``name``; its dead workers' RUNNING trials are marked FAILED first."""
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise UserError(f"no sweep {name!r} here: {path} does not exist; give its --storage")
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(url))
    except KeyError:
        raise UserError(f"no sweep {name!r} in {shown(url)}") from None
    heartbeat = study.user_attrs.get("heartbeat")
    if heartbeat and study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage = open_storage(url, *heartbeat)
        study = optuna.load_study(study_name=name, storage=storage)
        fail_stale_trials(study)
    return study


def _row(trial: FrozenTrial) -> dict[str, Any]:
    took = None
    if trial.datetime_complete is not None and trial.datetime_start is not None:
        took = round((trial.datetime_complete - trial.datetime_start).total_seconds(), 2)
    row = {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.value,
        "params": trial.params,
        "validations": len(trial.intermediate_values),
        "seconds": took,
        "run_dir": trial.user_attrs.get("run_dir"),
    }
    if "error" in trial.user_attrs:
        row["error"] = trial.user_attrs["error"]
    return row


def importance(study: optuna.Study) -> tuple[dict[str, float] | None, str | None]:
    """fANOVA importance of each parameter over the completed trials (Hutter et al. 2014),
    or None and the reason when there are too few of them to say."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return None, f"needs at least 2 completed trials, has {len(complete)}"
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    try:
        values = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError) as err:  # e.g. no parameter varies across the trials
        return None, str(err).splitlines()[0]
    return {k: round(float(v), 4) for k, v in values.items()}, None


def summary(study: optuna.Study, url: str) -> dict[str, Any]:
    """Everything ``neuralab sweep status --json`` prints."""
    signature = study.user_attrs.get(SIGNATURE, {})
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    ranked = sorted(complete, key=lambda t: -t.value if maximize else t.value)
    imp, note = importance(study)
    return {
        "name": study.study_name,
        "storage": shown(url),
        "metric": signature.get("metric"),
        "direction": "maximize" if maximize else "minimize",
        "trials": len(trials),
        "states": dict(Counter(t.state.name for t in trials)),
        "best": _row(ranked[0]) if ranked else None,
        "top": [_row(t) for t in ranked[:TOP]],
        "failed": [_row(t) for t in trials if t.state == TrialState.FAIL],
        "importance": imp,
        "importance_note": note,
    }


def plot(study: optuna.Study, info: dict[str, Any], out_dir: Path) -> list[str]:
    """``history.png`` (each trial's value and the best so far; the validation curves, with
    pruned trials dashed) and ``importance.png``; returns the paths written."""
    from matplotlib.ticker import MaxNLocator

    from neuralab.plots import subplots

    out_dir.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    metric = info["metric"] or "objective"
    better = max if info["direction"] == "maximize" else min
    fig, (ax, curves) = subplots(1, 2, figsize=(11, 4))
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
    ax.scatter([t.number for t in done], [t.value for t in done], label="complete", zorder=3)
    if pruned:
        ax.scatter(
            [t.number for t in pruned],
            [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
            marker="x",
            color="grey",
            label="pruned (last report)",
        )
    best, xs, ys = None, [], []
    for t in sorted(done, key=lambda t: t.number):
        best = t.value if best is None else better(best, t.value)
        xs.append(t.number)
        ys.append(best)
    ax.step(xs, ys, where="post", color="C3", label="best so far")
    ax.set(xlabel="trial", ylabel=metric, title=f"{study.study_name}: history")
    ax.legend()
    for t in done + pruned:
        steps = sorted(t.intermediate_values)
        values = [t.intermediate_values[s] for s in steps]
        style = "-" if t.state == TrialState.COMPLETE else "--"
        curves.plot(steps, values, style, alpha=0.7, color="C0" if style == "-" else "grey")
    curves.set(xlabel="validation", ylabel=metric, title="validation curves (pruned dashed)")
    for axis in (ax.xaxis, curves.xaxis):
        axis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    paths = [out_dir / "history.png"]
    fig.savefig(paths[0], dpi=100)
    if info["importance"]:
        names = list(info["importance"])[::-1]
        fig, ax = subplots(figsize=(6, 0.5 * len(names) + 1.5))
        ax.barh(names, [info["importance"][n] for n in names])
        ax.set(xlabel="fANOVA importance", title=f"{study.study_name}: what mattered")
        fig.tight_layout()
        paths.append(out_dir / "importance.png")
        fig.savefig(paths[-1], dpi=100)
    return [str(p) for p in paths]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def format_text(info: dict[str, Any]) -> str:
    """The human-readable status: counts, best trials with their parameters, importance."""
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(info["states"].items()))
    lines = [
        f"sweep {info['name']} ({info['storage']}): {info['trials']} trials ({states or 'none'}); "
        f"{info['direction']} {info['metric']}"
    ]
    if info["top"]:
        keys = list(info["top"][0]["params"])
        header = ["trial", info["metric"] or "value", *keys, "run"]
        rows = [
            [str(r["number"]), f"{r['value']:.4f}", *(_fmt(r["params"].get(k)) for k in keys)]
            + [r["run_dir"] or "-"]
            for r in info["top"]
        ]
        widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
        lines.append("")
        for row in [header, *rows]:
            lines.append("  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())
    if info["importance"]:
        lines.append("\nparameter importance (fANOVA):")
        lines += [f"  {k:<24} {v:.3f}" for k, v in info["importance"].items()]
    else:
        lines.append(f"\nparameter importance: {info['importance_note']}")
    for r in info["failed"]:
        lines.append(f"trial {r['number']} failed: {r.get('error', 'its worker stopped')}")
    if info.get("plots"):
        lines.append(f"\nplots: {', '.join(info['plots'])}")
    return "\n".join(lines)

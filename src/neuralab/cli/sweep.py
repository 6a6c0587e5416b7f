"""``neuralab sweep``: run a sweep, or show where one stands.

    neuralab sweep CONFIG [key=value ...] --trials N [--storage URL] [--workers N] [--json]
    neuralab sweep status NAME [--storage URL] [--out-dir DIR] [--json]

(A sweep file literally named ``status`` is given as ``./status``.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from neuralab.errors import UserError

ORDER = 7

USAGE = (
    "neuralab sweep CONFIG [key=value ...] --trials N [--storage URL] [--workers N] [--json]\n"
    "       neuralab sweep status NAME [--storage URL] [--out-dir DIR] [--json]"
)


def _require_optuna() -> None:
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise UserError("sweeps need Optuna: pip install 'neuralab[sweep]'") from None


def _show(info: dict, as_json: bool) -> None:
    from neuralab.sweep.status import format_text

    if as_json:
        print(json.dumps(info, indent=2))
    else:
        print(format_text(info))


def cmd_sweep_run(args: argparse.Namespace, path: str, overrides: list[str]) -> int:
    from neuralab.sweep.run import check_request, run_sweep, sweep_dir
    from neuralab.sweep.space import load_sweep, trial_config
    from neuralab.sweep.status import plot, summary
    from neuralab.sweep.storage import check_url, default_storage, shown
    from neuralab.tasks import build_task

    if args.trials is None:
        raise UserError("how many trials? neuralab sweep CONFIG --trials N")
    sweep = load_sweep(path, overrides)
    cfg = trial_config(sweep, {})
    build_task(cfg).check(cfg)  # a sweep that cannot train must fail before its first trial
    url = args.storage or default_storage(sweep.name)
    check_url(url)
    check_request(url, args.trials, args.workers)
    print(
        f"sweep {sweep.name}: up to {args.trials} trials, {args.workers} worker(s), "
        f"storage {shown(url)}, runs in {sweep_dir(sweep.name)}/",
        file=sys.stderr,
        flush=True,
    )
    started = time.perf_counter()
    study = run_sweep(sweep, url, args.trials, args.workers)
    info = summary(study, url)
    info["wall_s"] = round(time.perf_counter() - started, 2)
    info["plots"] = plot(study, info, Path(args.out_dir or sweep_dir(sweep.name) / "plots"))
    _show(info, args.json)
    return 0


def cmd_sweep_status(args: argparse.Namespace, names: list[str]) -> int:
    from neuralab.sweep.run import sweep_dir
    from neuralab.sweep.status import load, plot, summary
    from neuralab.sweep.storage import default_storage

    if len(names) != 1:
        raise UserError("which sweep? neuralab sweep status NAME [--storage URL]")
    if args.trials is not None or args.workers != 1:
        raise UserError("sweep status takes --storage, --out-dir and --json only")
    name = names[0]
    url = args.storage or default_storage(name)
    study = load(name, url)
    info = summary(study, url)
    info["plots"] = plot(study, info, Path(args.out_dir or sweep_dir(name) / "plots"))
    _show(info, args.json)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    _require_optuna()
    first, rest = args.items[0], args.items[1:]
    if first == "status":
        return cmd_sweep_status(args, rest)
    return cmd_sweep_run(args, first, rest)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``neuralab sweep`` to the CLI's subcommands."""
    p = sub.add_parser(
        "sweep",
        help="hyperparameter sweeps with Optuna: run one, or `sweep status NAME`",
        usage=USAGE,
        description="Run a sweep declared in TOML (a run config plus a [sweep] table), "
        "or show the best trials, parameter importance and plots of one.",
    )
    p.add_argument(
        "items",
        nargs="+",
        metavar="CONFIG [key=value ...] | status NAME",
        help="a sweep file or preset, then overrides of its run config; or status NAME",
    )
    p.add_argument("--trials", type=int, help="total trials the study should hold")
    p.add_argument(
        "--storage",
        help="sqlite:///PATH (default sqlite:///runs/NAME/sweep.db), "
        "postgresql://user@host/db (many machines) or memory",
    )
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    p.add_argument("--out-dir", help="where the plots go (default runs/NAME/plots)")
    p.add_argument("--json", action="store_true", help="print the status as one JSON object")
    p.set_defaults(func=cmd_sweep)

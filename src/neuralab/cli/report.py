"""``neuralab report`` (one HTML page of a run) and ``neuralab compare`` (runs side by side)."""

from __future__ import annotations

import argparse
from pathlib import Path

from neuralab.cli.common import add_json, print_json, short, table

ORDER = 5


def cmd_report(args: argparse.Namespace) -> int:
    from neuralab.report.html import build_report

    path = build_report(args.run, args.out)
    if args.json:
        print_json({"run": args.run, "html": str(path)})
    else:
        print(f"report: {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from neuralab.report.compare import compare

    result = compare(args.runs, args.out, force=args.force)
    if args.json:
        print_json(result)
        return 0
    keys = list(result["differences"])
    metrics = list(result["metrics"])
    rows = []
    for i, run in enumerate(result["runs"]):
        values = [result["differences"][k][i] for k in keys]
        values += [short(result["metrics"][m][i]) for m in metrics]
        rows.append([Path(run).name, *values])
    print(table(rows, ["run", *keys, *metrics]))
    if not keys:
        print("(the configs are identical)")
    print(f"page: {result['html']}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="one self-contained HTML page of a run")
    p.add_argument("run")
    p.add_argument("--out", help="where to write it (default: RUN/report.html)")
    add_json(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="runs side by side: config differences, metrics, curves")
    p.add_argument("runs", nargs="+")
    p.add_argument(
        "--out", help="the HTML page, and a .png beside it (default: FIRST_RUN/compare.html)"
    )
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    add_json(p)
    p.set_defaults(func=cmd_compare)

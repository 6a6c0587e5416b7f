"""What every domain of the CLI shares: the parser class, common options, output helpers and
``resolve_run`` (a new run from a config, or ``--resume`` of a stopped one)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from neuralab.configfile import run_config_path
from neuralab.errors import UserError
from neuralab.runs import lock_run_dir


def one_line(message: str) -> str:
    """``message`` with every unprintable character (a newline in a user's argument, say)
    written as its escape, so that an error is always one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every user error
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def add_json(p: argparse.ArgumentParser, what: str = "the result") -> None:
    p.add_argument("--json", action="store_true", help=f"print {what} as one JSON object")


def add_which(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--which",
        default="best",
        choices=["best", "last"],
        help="the checkpoint: best validation score, or the last (default: best)",
    )


def add_run_options(p: argparse.ArgumentParser, presets: str) -> None:
    """CONFIG [key=value ...], --run-dir, --resume and --json of a command that trains."""
    p.add_argument(
        "items",
        nargs="*",
        metavar="CONFIG [key=value ...]",
        help=f"a TOML file or preset ({presets}), then overrides such as optim.lr=2e-3",
    )
    p.add_argument("--run-dir", help="where to write the run (must not exist yet)")
    p.add_argument("--resume", metavar="RUN", help="continue a stopped run to its configured end")
    add_json(p, "the results")


def add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="look for datasets in DIR first (the same as data.data_dir=DIR)",
    )


def data_dir_override(args: argparse.Namespace) -> list[str]:
    """``--data-dir DIR`` as the override it stands for (none when not given)."""
    return [f"data.data_dir={args.data_dir}"] if getattr(args, "data_dir", None) else []


def resolve_run(
    args: argparse.Namespace,
    *,
    load: Callable[[str | Path, list[str]], Any],
    to_toml: Callable[[Any], str],
    create: Callable[[Any, str], Path],
    usage: str,
    write: bool = True,
) -> tuple[Any, Path, bool]:
    """(config, run directory, resuming) of a command that trains.

    ``CONFIG [key=value ...]``: ``load`` the config, then ``create(cfg, name)`` checks it and
    makes the run directory (a run that cannot start leaves none behind). ``--resume RUN
    [key=value ...]``: the run's saved config, with the overrides written back when ``write``.
    """
    items = [*args.items, *data_dir_override(args)]
    if args.resume:
        if items and "=" not in items[0]:
            raise UserError("give either a config file or --resume RUN, not both")
        run_dir = Path(args.resume)
        cfg = load(run_config_path(run_dir), items)
        if write:
            lock_run_dir(run_dir)  # one writer: a second --resume of this run is refused
            if items:
                (run_dir / "config.toml").write_text(to_toml(cfg))
        return cfg, run_dir, True
    if not items or "=" in items[0]:
        raise UserError(f"missing config: {usage}")
    cfg = load(items[0], items[1:])
    return cfg, create(cfg, Path(items[0]).stem), False


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else "-" if value is None else str(value)


def comma_list(text: str, what: str, convert: Callable[[str], Any], example: str) -> list[Any]:
    """``text`` split at commas, each part converted; a one-line error otherwise."""
    try:
        values = [convert(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(
            f"{what} takes values separated by commas, e.g. {example}; got {text!r}"
        ) from None
    if not values:
        raise UserError(f"{what} needs at least one value, e.g. {example}")
    return values


def top_classes(probs: Any, classes: Any, k: int) -> list[dict[str, Any]]:
    """The ``k`` likeliest of (C,) class probabilities, likeliest first, as
    {"class", "index", "prob"} (``predict``'s JSON)."""
    top = probs.topk(min(k, len(classes)))
    return [
        {"class": classes[i], "index": int(i), "prob": float(p)}
        for p, i in zip(top.values, top.indices, strict=True)
    ]

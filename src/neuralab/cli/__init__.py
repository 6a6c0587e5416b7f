"""The ``neuralab`` command.

Each domain registers its own subcommands from one module of this package (``data``,
``train``, ``ssl``, ``attack``, ``probe``, ``report``, ``rl``, ``sweep``), which imports what
its commands need only when they run, so ``--help`` answers at once. A new domain is a new
module with ``ORDER`` and ``add_commands(subparsers)``. User mistakes (``UserError``) print one
line on stderr and exit with status 2; ``--json`` prints one JSON object on stdout and nothing
else there.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import pkgutil
import sys

from neuralab.cli.common import Parser, one_line
from neuralab.errors import UserError

# a file system that refuses a write (read-only, full, no permission, a bad name): the user's
# to fix, so one line and exit 2 like every user error
ENVIRONMENT_ERRORS = {
    errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG,
    errno.EISDIR, errno.ENOTDIR,
}  # fmt: skip

DESCRIPTION = (
    "neuralab: the reference experiments of deep learning on a laptop CPU. Prepare data, "
    "design a model, train, validate and test; then attack, probe, compare and report."
)


def build_parser() -> argparse.ArgumentParser:
    from neuralab import __version__

    parser = Parser(prog="neuralab", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"neuralab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    domains = [
        importlib.import_module(f"{__name__}.{m.name}")
        for m in pkgutil.iter_modules(__path__)
        if m.name != "common" and not m.name.startswith("_")  # helpers, not domains
    ]
    for domain in sorted(domains, key=lambda d: d.ORDER):
        domain.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as err:
        print(f"neuralab: error: {one_line(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("neuralab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `neuralab ... | head` closed our stdout: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:
        if err.errno not in ENVIRONMENT_ERRORS:
            raise  # our bug: a traceback
        where = f"{err.filename}: " if err.filename else ""
        print(f"neuralab: error: {where}{err.strerror} (the file system refused)", file=sys.stderr)
        return 2

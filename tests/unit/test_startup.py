"""The CLI answers ``--help`` and argument errors without loading the heavy libraries: in a
fresh interpreter, building the whole parser (every domain's subcommands), printing help and
rejecting a bad argument import neither torch nor matplotlib, optuna, scikit-learn or
gymnasium; ``neuralab data list`` needs none of them either (numpy only). A behaviour, not a
timing: the time it saves is measured in issue 27's note."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "matplotlib", "optuna", "sklearn", "gymnasium", "numpy")

CHECK = f"""
import contextlib, io, json, sys
from neuralab import cli
for argv in (["--help"], ["train", "--help"], ["rl", "train", "--help"], ["train", "--bogus"],
             ["attack"], ["sweep", "run", "--help"]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            cli.main(argv)
        except SystemExit as stop:
            assert stop.code in (0, 2), (argv, stop.code)
print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
"""


DATA_LIST = f"""
import json, sys
from neuralab import cli
assert cli.main(["data", "list", "--json"]) == 0
print(json.dumps([m for m in {HEAVY[:-1]!r} if m in sys.modules]))
"""


def loaded(script: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_cli_help_and_argument_errors_load_no_heavy_library():
    assert loaded(CHECK) == []


def test_data_list_loads_no_heavy_library():
    assert loaded(DATA_LIST) == []

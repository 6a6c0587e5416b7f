"""Importing neuralab leaves the user's matplotlib (and torch) settings alone.

This is the notebook check. A Jupyter notebook draws inline plots through a backend it
selects itself (``module://matplotlib_inline.backend_inline``); a library that calls
``matplotlib.use("Agg")`` when imported switches that backend off, and from then on the
notebook's figures no longer show. Importing ``matplotlib.pyplot`` is the other way to
trespass: pyplot picks and locks in a backend and keeps a registry of open figures.

So a fresh interpreter first selects a non-Agg backend (``svg``, standing in for the inline
one), then imports every module under ``neuralab`` that ``pkgutil.walk_packages`` finds
(``neuralab.__main__`` as ``python -m neuralab --help`` runs it). Afterwards the backend
must be the one selected, ``matplotlib.pyplot`` must not have been imported, and the
rcParams and torch's global settings (threads, default dtype, determinism, matmul
precision, grad mode) must be as they were. A module whose optional dependency
(``neuralab[rl]``, ``neuralab[sweep]``) is not installed is left out, and
``test_every_module_was_imported`` is skipped naming it; any other import error fails.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CHECK = r"""
import contextlib, importlib, io, json, pkgutil, sys

import matplotlib

matplotlib.use("svg")  # before neuralab: the notebook's own choice
import torch

OPTIONAL = {"gymnasium": "rl", "ale_py": "rl", "Box2D": "rl", "pygame": "rl",
            "optuna": "sweep", "psycopg2": "sweep"}


def torch_state():
    return [torch.get_num_threads(), str(torch.get_default_dtype()),
            torch.are_deterministic_algorithms_enabled(),
            torch.get_float32_matmul_precision(), torch.is_grad_enabled()]


rc_before, torch_before = dict(matplotlib.rcParams), torch_state()
import neuralab

imported, skipped = ["neuralab"], {}


def missing(name, err):
    top = (getattr(err, "name", None) or "").partition(".")[0]
    if not isinstance(err, ModuleNotFoundError) or top not in OPTIONAL:
        raise err
    skipped[name] = f"needs {err.name} (pip install 'neuralab[{OPTIONAL[top]}]')"


def import_module(name):
    if name != "neuralab.__main__":
        return importlib.import_module(name)
    argv, sys.argv = sys.argv, ["neuralab", "--help"]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            importlib.import_module(name)
    except SystemExit as stop:
        assert stop.code == 0, f"python -m neuralab --help exited with {stop.code}"
    finally:
        sys.argv = argv


def on_package_error(name):
    missing(name, sys.exc_info()[1])


for info in pkgutil.walk_packages(neuralab.__path__, "neuralab.", onerror=on_package_error):
    try:
        import_module(info.name)
    except ImportError as err:
        missing(info.name, err)
        continue
    imported.append(info.name)

rc_after = dict(matplotlib.rcParams)
print(json.dumps({
    "backend": matplotlib.get_backend(),
    "pyplot": "matplotlib.pyplot" in sys.modules,
    "rc_changed": sorted(k for k in rc_before if rc_before[k] != rc_after.get(k)),
    "torch": [torch_before, torch_state()],
    "imported": imported,
    "skipped": skipped,
}))
"""


@pytest.fixture(scope="module")
def after_import() -> dict:
    """What the fresh interpreter saw after importing every neuralab module."""
    done = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_neuralab_leaves_backend_pyplot_and_settings_alone(after_import):
    assert after_import["backend"] == "svg"
    assert not after_import["pyplot"], "a neuralab module imports matplotlib.pyplot"
    assert after_import["rc_changed"] == []
    before, after = after_import["torch"]
    assert after == before


def test_every_module_was_imported(after_import):
    """The check saw the whole package (the probes, the plots, the CLI), not a part of it."""
    imported = set(after_import["imported"])
    assert {"neuralab.plots", "neuralab.probe", "neuralab.probe.gradients"} <= imported
    assert {"neuralab.cli", "neuralab.__main__", "neuralab.report.compare"} <= imported
    if after_import["skipped"]:
        reasons = "; ".join(f"{m}: {why}" for m, why in after_import["skipped"].items())
        pytest.skip(f"optional dependencies missing, not imported: {reasons}")

"""Every tutorial in ``notebooks/`` runs end to end as a Jupyter notebook, and reproduces the
number its text states.

The notebooks are Jupytext percent-format ``.py`` files (readable diffs, checked by ruff like
the rest of the code); here each is turned into a notebook and executed cell by cell in a
fresh IPython kernel (nbclient), in a temporary directory, with the inline backend a user has.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from conftest import require_dataset

jupytext = pytest.importorskip("jupytext", reason="pip install 'neuralab[notebooks]'")
nbclient = pytest.importorskip("nbclient", reason="pip install 'neuralab[notebooks]'")
nbformat = pytest.importorskip("nbformat", reason="pip install 'neuralab[notebooks]'")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.py"))
EXPECTED = re.compile(r"Expected: (.+?) ([0-9.]+) ± ([0-9.]+)")


def datasets_used(source: str) -> set[str]:
    """The datasets a notebook reads: those it loads by name, and those of the training
    presets it loads (``config.load("shakespeare_lstm", ...)`` reads tiny shakespeare)."""
    from neuralab import config
    from neuralab.errors import UserError

    names = set(re.findall(r'data\.load\("([a-z0-9-]+)"', source))
    for preset in set(re.findall(r'config\.load\(\s*"([a-z0-9_]+)"', source)):
        try:
            names.add(config.load(preset).data.name)
        except UserError:  # not a training preset (a reinforcement-learning one)
            continue
    return names


def execute(notebook, cwd: Path):
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()
    return notebook


def outputs(notebook, kind: str) -> list:
    return [
        out
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if kind in out.get("data", {}) or (kind == "stream" and out.get("name") == "stdout")
    ]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_reproduces_its_number(path, tmp_path):
    """The notebook executes without an error, shows at least one picture, and its last
    printed metric lies within the tolerance its text states ("Expected: ... X ± Y"). A
    notebook on a dataset that is not here is skipped (failed under NEURALAB_REQUIRE_DATA)."""
    for name in datasets_used(path.read_text()):
        require_dataset(name)
    notebook = execute(jupytext.read(path), tmp_path)
    assert outputs(notebook, "image/png"), "a tutorial shows at least one picture"
    text = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    metric, value, tolerance = EXPECTED.search(text).groups()
    printed = [line for out in outputs(notebook, "stream") for line in out["text"].splitlines()]
    final = ast.literal_eval(printed[-1])
    assert final["metric"] == metric
    assert abs(final["value"] - float(value)) <= float(tolerance), (final, value, tolerance)


def test_importing_neuralab_in_a_notebook_leaves_inline_plots_alone(tmp_path):
    """In a real kernel, the matplotlib backend before and after importing every neuralab
    module is the same (the inline one), so a notebook's plots keep showing."""
    cells = [
        "import matplotlib\nbefore = matplotlib.get_backend()",
        "import importlib, pkgutil, neuralab\n"
        "for m in pkgutil.walk_packages(neuralab.__path__, 'neuralab.'):\n"
        "    if m.name != 'neuralab.__main__':\n"
        "        importlib.import_module(m.name)",
        "assert matplotlib.get_backend() == before, (before, matplotlib.get_backend())\n"
        "print(before)",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    executed = execute(notebook, tmp_path)
    assert "inline" in executed.cells[-1].outputs[0]["text"]

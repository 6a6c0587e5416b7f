"""Imports point down: the layers of ``neuralab``, read from the source with ``ast``.

Every ``import`` of a ``neuralab`` module anywhere in a file counts, including those inside
functions (a lazy import is still a dependency) and under ``TYPE_CHECKING``. The test fails on
an import from a lower layer to a higher one and on any import cycle, between packages or
between modules. ``test_a_planted_upward_import_is_caught`` shows that it would.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "neuralab"

# Bottom to top. A unit (a subpackage, or a module directly under neuralab/) may import from
# its own layer or lower ones. The ground holds what every kind of run shares; the kinds of
# run (tasks) sit above the models, data, attacks and self-supervised building blocks they
# are made of and below the one training loop; what uses trained models (probes, reports,
# reinforcement learning, sweeps) sits above the loop, and the CLI on top.
LAYERS: list[set[str]] = [
    {"errors", "registry", "runs", "seed", "configfile"},
    {"models", "plots", "text"},
    {"config"},
    {"data", "attack", "ssl"},
    {"tasks"},
    {"train"},
    {"probe", "report", "rl", "sweep"},
    {"cli", "__main__", "__init__"},
]


def module_name(path: Path, root: Path = SRC) -> str:
    parts = ["neuralab", *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit(module: str) -> str:
    """The layer unit of a module: ``neuralab.train.loop`` -> ``train``; the package's own
    ``__init__`` is ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def import_graph(root: Path = SRC) -> dict[str, set[str]]:
    """module -> the neuralab modules it imports."""
    modules = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from neuralab import data` imports the module neuralab.data
                subs = [f"{node.module}.{a.name}" for a in node.names]
                targets = [s for s in subs if s in modules] or [node.module]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target.startswith("neuralab") and target != name:
                    graph[name].add(target)
    return graph


def layer_of(u: str) -> int:
    for i, layer in enumerate(LAYERS):
        if u in layer:
            return i
    raise AssertionError(f"neuralab.{u} is in no layer; add it to LAYERS in {__file__}")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{a} (layer {layer_of(unit(a))}) imports {b} (layer {layer_of(unit(b))})"
        for a, targets in graph.items()
        for b in targets
        if layer_of(unit(b)) > layer_of(unit(a))
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(set(graph) | {w for ws in graph.values() for w in ws}):
        if v not in index:
            visit(v)
    return found


def unit_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for a, targets in graph.items():
        for b in targets:
            if unit(a) != unit(b):
                out[unit(a)].add(unit(b))
    return out


def test_every_unit_has_a_layer():
    for path in SRC.rglob("*.py"):
        layer_of(unit(module_name(path)))


def test_imports_point_down():
    assert upward_imports(import_graph()) == []


def test_no_import_cycles_between_packages_or_modules():
    graph = import_graph()
    assert cycles(unit_graph(graph)) == []
    assert cycles(graph) == []


def test_a_planted_upward_import_is_caught(tmp_path):
    """The checks above can fail: a model that imports the training loop is an upward import,
    and the loop importing it back is a cycle."""
    import shutil

    root = tmp_path / "neuralab"
    shutil.copytree(SRC, root)
    (root / "models" / "planted.py").write_text("from neuralab.train import loop\n")
    (root / "train" / "planted.py").write_text("import neuralab.models.planted\n")
    graph = import_graph(root)
    assert "neuralab.models.planted (layer 1) imports neuralab.train.loop (layer 5)" in (
        upward_imports(graph)
    )
    assert any({"models", "train"} <= set(c) for c in cycles(unit_graph(graph)))


def test_no_source_file_is_longer_than_400_lines():
    """Files that fit on a few screens (DESIGN.md)."""
    lengths = {str(p.relative_to(SRC)): len(p.read_text().splitlines()) for p in SRC.rglob("*.py")}
    assert {f: n for f, n in lengths.items() if n > 400} == {}

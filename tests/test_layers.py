"""Each layer imports only the layers below it (read from the source with ``ast``).

Order between packages: tasks → models → attacks → search.config → search.engine →
search.results → search.analysis → search.report → cli. Inside ``search/engine`` and ``cli`` the
modules are in layers of their own (:data:`INNER`). Imports inside functions count everywhere: a
lazy import of a higher layer is still a circle in the design, only hidden from Python.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = [
    ("rts.tasks", ROOT / "tasks"),
    ("rts.models", ROOT / "models"),
    ("rts.attacks", ROOT / "attacks"),
    ("rts.search.config", ROOT / "search" / "config"),
    ("rts.search.engine", ROOT / "search" / "engine"),
    ("rts.search.results", ROOT / "search" / "results"),
    ("rts.search.analysis", ROOT / "search" / "analysis"),
    ("rts.search.report", ROOT / "search" / "report"),
    ("rts.cli", ROOT / "cli"),
]
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}
PACKAGES = {"rts.tasks": "tasks", "rts.models": "models", "rts.attacks": "attacks"}
PACKAGES |= {"rts.search": "search", "rts.cli": "cli"}

INNER: dict[str, list[tuple[str, ...]]] = {
    # bottom to top; a module imports only modules of lower rows (see search/engine/__init__.py)
    "rts.search.engine": [
        ("faults", "halving", "space", "storage", "session"),
        ("paths", "rows"),
        ("trial", "plan"),
        ("records", "trainable", "progress", "tracking", "replay"),
        ("samplers",),
        ("searcher",),
        ("experiment",),
        ("batches",),
        ("stages",),
    ],
    "rts.cli": [
        ("analyze", "attack", "data", "search", "train"),
        ("report",),
        ("main",),
    ],
}


def module_files() -> dict[str, Path]:
    """Every module of the installed namespace, by dotted name (``rts.search.engine.stages``)."""
    out = {}
    for prefix, folder in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([prefix, *parts])] = path
    return out


def imported_modules(source: str) -> set[str]:
    """Every ``rts.…`` name imported anywhere in ``source`` (module level and inside functions),
    as the module and each ``module.name`` it takes from it."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m.startswith("rts.")}


def module_imports(source: str, modules: Iterable[str]) -> set[str]:
    """The modules of ``modules`` that ``source`` imports (a name imported from a module is an
    import of that module; from a package, of the submodule when it is one)."""
    return imported_modules(source) & set(modules)


def layer_of(module: str) -> str | None:
    """The layer a dotted ``rts.…`` module belongs to (longest matching prefix)."""
    hits = [name for name in RANK if module == name or module.startswith(name + ".")]
    return max(hits, key=len) if hits else None


def inner_violations(package: str, edges: Mapping[str, set[str]]) -> list[str]:
    """Imports inside ``package`` that do not point to a lower row of :data:`INNER`."""
    row = {f"{package}.{m}": i for i, names in enumerate(INNER[package]) for m in names}
    bad = []
    for module, targets in sorted(edges.items()):
        if not module.startswith(package + ".") or module not in row:
            continue
        for target in sorted(targets):
            if target in row and row[target] >= row[module]:
                bad.append(f"{module} imports {target} (row {row[target]} >= {row[module]})")
    return bad


def strongly_connected(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module → the modules of ours it imports (functions' imports included). A module's own
    parent packages are left out: Python imports them before the module anyway, and
    ``from rts.cli import analyze`` names the submodule, not the package's ``__init__``."""
    files = module_files()
    graph = {}
    for m, p in files.items():
        found = module_imports(p.read_text(encoding="utf-8"), files)
        graph[m] = {t for t in found if not (m == t or m.startswith(t + "."))}
    return graph


def test_layer_of_reads_prefixes():
    assert layer_of("rts.search.engine.stages") == "rts.search.engine"
    assert layer_of("rts.tasks.registry") == "rts.tasks"
    assert layer_of("rts.search") is None


def test_imports_inside_functions_are_read():
    source = "import os\n\ndef f():\n    from rts.search.engine.stages import run_stage1\n"
    assert "rts.search.engine.stages" in imported_modules(source)


@pytest.mark.parametrize(("layer", "folder"), LAYERS, ids=[name for name, _ in LAYERS])
def test_layer_imports_only_lower_layers(layer, folder):
    bad = []
    for path in sorted(folder.rglob("*.py")):
        for module in imported_modules(path.read_text(encoding="utf-8")):
            other = layer_of(module)
            if other is not None and RANK[other] > RANK[layer]:
                bad.append(f"{path.relative_to(ROOT)} imports {module}")
    assert bad == []


@pytest.mark.parametrize("package", sorted(INNER))
def test_every_module_has_its_row(package):
    """A new module must be placed in the order (and in the package's map of layers)."""
    folder = ROOT / package.removeprefix("rts.").replace(".", "/")
    modules = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
    placed = {m for row in INNER[package] for m in row}
    assert modules == placed


@pytest.mark.parametrize("package", sorted(INNER))
def test_modules_import_only_lower_rows(package):
    assert inner_violations(package, import_graph()) == []


def test_no_import_circle_anywhere():
    """No strongly connected component in the whole namespace, lazy imports included."""
    assert strongly_connected(import_graph()) == []


def test_a_crafted_upward_import_inside_a_function_is_caught():
    """The check fails on what the old layer test missed: a lazy import of a higher row."""
    edges = import_graph()
    source = "def f():\n    from rts.search.engine.stages import run_stage1\n"
    edges["rts.search.engine.paths"] |= module_imports(source, module_files())
    assert inner_violations("rts.search.engine", edges) == [
        "rts.search.engine.paths imports rts.search.engine.stages (row 8 >= 1)"
    ]
    assert ["rts.search.engine.paths", "rts.search.engine.stages"] in [
        [m for m in c if m.endswith((".paths", ".stages"))] for c in strongly_connected(edges)
    ]


def test_search_package_has_nothing_outside_its_layers():
    """Every module of search/ sits in a layer folder (no flat grab-bag files)."""
    stray = [p.name for p in (ROOT / "search").glob("*.py") if p.name != "__init__.py"]
    assert stray == []

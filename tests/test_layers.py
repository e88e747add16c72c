"""Each layer imports only the layers below it (read from the source with ``ast``).

Order: tasks → models → attacks → search.config → search.engine → search.results →
search.analysis → search.report → cli. Function-level (lazy) imports count too: a lazy import
of a higher layer is still a cycle in the design.
"""

from __future__ import annotations

import ast
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


def layer_of(module: str) -> str | None:
    """The layer a dotted ``rts.…`` module belongs to (longest matching prefix)."""
    hits = [name for name in RANK if module == name or module.startswith(name + ".")]
    return max(hits, key=len) if hits else None


def imported_modules(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m.startswith("rts.")}


def test_layer_of_reads_prefixes():
    assert layer_of("rts.search.engine.stages") == "rts.search.engine"
    assert layer_of("rts.tasks.registry") == "rts.tasks"
    assert layer_of("rts.search") is None


@pytest.mark.parametrize(("layer", "folder"), LAYERS, ids=[name for name, _ in LAYERS])
def test_layer_imports_only_lower_layers(layer, folder):
    bad = []
    for path in sorted(folder.rglob("*.py")):
        for module in imported_modules(path):
            other = layer_of(module)
            if other is not None and RANK[other] > RANK[layer]:
                bad.append(f"{path.relative_to(ROOT)} imports {module}")
    assert bad == []


def test_search_package_has_nothing_outside_its_layers():
    """Every module of search/ sits in a layer folder (no flat grab-bag files)."""
    stray = [p.name for p in (ROOT / "search").glob("*.py") if p.name != "__init__.py"]
    assert stray == []

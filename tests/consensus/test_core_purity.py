"""House rule 1: the pure Raft modules import no I/O, clock, randomness or threads."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cellmesh.consensus

FORBIDDEN = {"trio", "os", "socket", "time", "random", "threading", "asyncio", "subprocess"}
PURE_MODULES = [
    "core",
    "_leader",
    "confchange",
    "catchup",
    "config",
    "ready",
    "readindex",
    "log",
    "quorum",
    "types",
    "messages",
    "progress",
    "errors",
]
# The package __init__ is not listed: it re-exports the WAL and the Trio driver
# as the public API (house rule 3). Purity is a property of each core module's
# own imports, which is what this file checks; importing any cellmesh module
# runs cellmesh/__init__ (which imports trio) whatever this package does.
PACKAGE_DIR = Path(cellmesh.consensus.__file__).parent


def imported_roots(source: str) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("name", PURE_MODULES)
def test_pure_core_module_imports_no_io(name: str) -> None:
    source = (PACKAGE_DIR / f"{name}.py").read_text()
    assert not imported_roots(source) & FORBIDDEN


@pytest.mark.parametrize("name", PURE_MODULES)
def test_pure_core_module_imports_only_pure_siblings(name: str) -> None:
    """A pure module may import other pure consensus modules, never wal/node."""
    tree = ast.parse((PACKAGE_DIR / f"{name}.py").read_text())
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("cellmesh.consensus.")
        ):
            assert node.module.rsplit(".", 1)[1] in PURE_MODULES


def test_import_checker_sees_nested_and_aliased_imports() -> None:
    src = "import os.path as p\nfrom time import monotonic\ndef f():\n    import random\n"
    assert imported_roots(src) == {"os", "time", "random"}

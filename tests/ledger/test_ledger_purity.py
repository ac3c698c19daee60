"""House rule 1 for the ledger: the state machine imports no I/O, clock, randomness or threads.

A replicated state machine must compute the same thing on every replica;
these modules may import only each other, the pure wire modules (proteins
and the codec under them) and :mod:`cellmesh.errors`. Read with ``ast``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cellmesh.ledger
from cellmesh.testing.purity import module_imports

LEDGER = Path(cellmesh.ledger.__file__).parent
PURE_LEDGER = {
    "cellmesh.ledger": "__init__.py",
    "cellmesh.ledger.codes": "codes.py",
    "cellmesh.ledger.errors": "errors.py",
    "cellmesh.ledger.proteins": "proteins.py",
    "cellmesh.ledger._store": "_store.py",
    "cellmesh.ledger._batch": "_batch.py",
    "cellmesh.ledger._accounts": "_accounts.py",
    "cellmesh.ledger._transfers": "_transfers.py",
    "cellmesh.ledger.queries": "queries.py",
    "cellmesh.ledger.snapshot": "snapshot.py",
    "cellmesh.ledger.state": "state.py",
}
#: Pure modules outside the ledger that it may use (their own purity is tested in tests/wire).
PURE_ELSEWHERE = {
    "cellmesh.errors", "cellmesh.wire.proteins", "cellmesh.wire.codec", "cellmesh.wire.replies",
}
#: The drivers: the replicated cell and the client (Trio, actors). Not pure, and no pure
#: module may import them; the package's ``__init__`` loads them lazily, in ``__getattr__``.
DRIVERS = {"cellmesh.ledger.cell": "cell.py", "cellmesh.ledger.client": "client.py"}
FORBIDDEN = frozenset({
    "trio", "os", "socket", "time", "random", "threading", "asyncio", "select", "mmap",
    "fcntl", "subprocess", "selectors", "multiprocessing", "ctypes", "importlib", "signal",
    "datetime", "uuid", "secrets", "sqlite3", "pathlib", "io", "shutil", "tempfile",
})


def problems(module: str) -> list[str]:
    path = LEDGER / PURE_LEDGER[module]
    source_module = f"{module}.__init__" if path.name == "__init__.py" else module
    out = []
    source = path.read_text(encoding="utf-8")
    lazy = _lazy_lines(source)
    for line, name in module_imports(source, source_module):
        root = name.split(".")[0]
        if module == "cellmesh.ledger" and name in DRIVERS and line in lazy:
            continue  # loaded on first use of its names, never at import
        if root in FORBIDDEN or name == "__import__":
            out.append(f"{module} imports {name} (line {line})")
        elif root == "cellmesh" and name not in PURE_LEDGER and name not in PURE_ELSEWHERE:
            out.append(f"{module} imports the non-pure cellmesh module {name} (line {line})")
    return out


def _lazy_lines(source: str) -> set[int]:
    """The lines of a module-level ``__getattr__`` (PEP 562: runs on first use of a name)."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            return set(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return set()


@pytest.mark.parametrize("module", sorted(PURE_LEDGER))
def test_purity_ledger_module_imports_no_io(module: str) -> None:
    assert problems(module) == []


def test_purity_every_ledger_module_is_checked() -> None:
    """A new module of the ledger joins this list (or says here why it is not pure)."""
    assert sorted(p.name for p in LEDGER.glob("*.py")) == sorted(
        [*PURE_LEDGER.values(), *DRIVERS.values()]
    )


def test_purity_ledger_drivers_import_actors_and_nothing_pure_imports_them() -> None:
    """The drivers are where the ledger meets the runtime; a driver import elsewhere fails
    ``test_purity_ledger_module_imports_no_io`` (only ``__getattr__`` may load them)."""
    cell = {n for _, n in module_imports((LEDGER / "cell.py").read_text(), "cellmesh.ledger.cell")}
    assert "cellmesh.actors.replicated" in cell

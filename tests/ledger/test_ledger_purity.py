"""House rule 1 for the ledger: the state machine imports no I/O, clock, randomness or threads.

A replicated state machine must compute the same thing on every replica;
these modules may import only each other, the pure wire modules (proteins
and the codec under them) and :mod:`cellmesh.errors`. Read with ``ast``.
"""

from __future__ import annotations

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
PURE_ELSEWHERE = {"cellmesh.errors", "cellmesh.wire.proteins", "cellmesh.wire.codec"}
FORBIDDEN = frozenset({
    "trio", "os", "socket", "time", "random", "threading", "asyncio", "select", "mmap",
    "fcntl", "subprocess", "selectors", "multiprocessing", "ctypes", "importlib", "signal",
    "datetime", "uuid", "secrets", "sqlite3", "pathlib", "io", "shutil", "tempfile",
})


def problems(module: str) -> list[str]:
    path = LEDGER / PURE_LEDGER[module]
    source_module = f"{module}.__init__" if path.name == "__init__.py" else module
    out = []
    for line, name in module_imports(path.read_text(encoding="utf-8"), source_module):
        root = name.split(".")[0]
        if root in FORBIDDEN or name == "__import__":
            out.append(f"{module} imports {name} (line {line})")
        elif root == "cellmesh" and name not in PURE_LEDGER and name not in PURE_ELSEWHERE:
            out.append(f"{module} imports the non-pure cellmesh module {name} (line {line})")
    return out


@pytest.mark.parametrize("module", sorted(PURE_LEDGER))
def test_purity_ledger_module_imports_no_io(module: str) -> None:
    assert problems(module) == []


def test_purity_every_ledger_module_is_checked() -> None:
    """A new module of the ledger joins this list (or says here why it is not pure)."""
    assert sorted(p.name for p in LEDGER.glob("*.py")) == sorted(PURE_LEDGER.values())

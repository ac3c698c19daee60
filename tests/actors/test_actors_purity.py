"""House rule 1 for the actor layer: the restart policy imports no I/O, clock or randomness.

Reads the source with ``ast`` (no import needed), resolves relative imports,
and checks every cellmesh module the policy imports is itself in the pure set.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import cellmesh
from cellmesh.testing.purity import module_imports

ROOT = Path(cellmesh.__file__).parent
#: Module -> path relative to the package root.
PURE_MODULES = {
    "cellmesh.actors.policy": "actors/policy.py",
    "cellmesh.actors.watches": "actors/watches.py",
    "cellmesh.actors.membership": "actors/membership.py",
    "cellmesh.actors.swap": "actors/swap.py",
    "cellmesh.actors.groupswap": "actors/groupswap.py",
    "cellmesh.actors.control": "actors/control.py",
    "cellmesh.actors.errors": "actors/errors.py",
    "cellmesh.actors.exitcause": "actors/exitcause.py",
    "cellmesh.actors._metrics": "actors/_metrics.py",
    "cellmesh.actors._stats": "actors/_stats.py",
    "cellmesh.actors._dnakeep": "actors/_dnakeep.py",
    # the replicated cell's state machine side: sessions, log batches, the machine
    "cellmesh.actors._replica_sessions": "actors/_replica_sessions.py",
    "cellmesh.actors._replica_entries": "actors/_replica_entries.py",
    "cellmesh.actors._replica_machine": "actors/_replica_machine.py",
    "cellmesh.actors._replica_types": "actors/_replica_types.py",
    "cellmesh.wire.proteins": "wire/proteins.py",
    "cellmesh.wire.codec": "wire/codec.py",
    "cellmesh.wire._columns": "wire/_columns.py",
    "cellmesh.wire._fields": "wire/_fields.py",
    "cellmesh.wire._cbor": "wire/_cbor.py",
    "cellmesh.wire._budget": "wire/_budget.py",
    "cellmesh.wire._cliptext": "wire/_cliptext.py",
    "cellmesh.wire._fit": "wire/_fit.py",
    "cellmesh.wire._kinds": "wire/_kinds.py",
    "cellmesh.errors": "errors.py",
}
FORBIDDEN = frozenset({
    "trio", "os", "socket", "time", "random", "threading", "asyncio", "subprocess",
    # the same capabilities under other names
    "select", "selectors", "signal", "multiprocessing", "ctypes", "importlib", "datetime",
})


imports = module_imports


def problems(module: str, root: Path = ROOT) -> list[str]:
    source = (root / PURE_MODULES[module]).read_text()
    out = []
    for line, name in imports(source, module):
        top = name.split(".")[0]
        if top in FORBIDDEN or name == "__import__":
            out.append(f"{module} imports {name} (line {line})")
        elif top == "cellmesh" and name not in PURE_MODULES:
            out.append(f"{module} imports the non-pure cellmesh module {name} (line {line})")
    return out


@pytest.mark.parametrize("module", sorted(PURE_MODULES))
def test_actors_purity_pure_modules_import_no_io(module: str) -> None:
    assert problems(module) == []


def test_actors_purity_checker_catches_each_form(tmp_path: Path) -> None:
    (tmp_path / "actors").mkdir()
    (tmp_path / "actors" / "policy.py").write_text(
        "import os.path\n"
        "from time import monotonic\n"
        "from .supervisor import Supervisor\n"
        "def f():\n"
        "    import random\n"
        "    __import__('trio')\n"
    )
    assert problems("cellmesh.actors.policy", tmp_path) == [
        "cellmesh.actors.policy imports os.path (line 1)",
        "cellmesh.actors.policy imports time (line 2)",
        "cellmesh.actors.policy imports the non-pure cellmesh module "
        "cellmesh.actors.supervisor (line 3)",
        "cellmesh.actors.policy imports random (line 5)",
        "cellmesh.actors.policy imports __import__ (line 6)",
    ]

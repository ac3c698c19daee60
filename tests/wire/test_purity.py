"""House rule 1 for the wire layer: the sans-I/O codec and proteins import no I/O.

The pure consensus modules (core, log, quorum, types, messages, progress, ...)
are covered by tests/consensus/test_core_purity.py; this file does not repeat
them. It checks the wire cores and, transitively, every cellmesh module they
import (cellmesh/errors.py), by reading their source with ``ast``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import cellmesh
from cellmesh.testing.purity import module_imports

ROOT = Path(cellmesh.__file__).parent
#: Module -> path relative to the package root. Consensus cores: see tests/consensus.
PURE_MODULES = {
    "cellmesh.wire.codec": "wire/codec.py",
    "cellmesh.wire.proteins": "wire/proteins.py",
    "cellmesh.wire.batching": "wire/batching.py",
    "cellmesh.wire.replies": "wire/replies.py",
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
    "trio", "os", "socket", "time", "random", "threading", "asyncio", "select", "mmap",
    "fcntl", "subprocess",
    # the same capabilities under other names
    "selectors", "multiprocessing", "ctypes", "importlib", "signal",
})


imports = module_imports


def problems(module: str) -> list[str]:
    source = (ROOT / PURE_MODULES[module]).read_text()
    out = []
    for line, name in imports(source, module):
        root = name.split(".")[0]
        if root in FORBIDDEN or name == "__import__":
            out.append(f"{module} imports {name} (line {line})")
        elif root == "cellmesh" and name not in PURE_MODULES:
            out.append(f"{module} imports the non-pure cellmesh module {name} (line {line})")
    return out


@pytest.mark.parametrize("module", sorted(PURE_MODULES))
def test_purity_wire_core_imports_no_io(module: str) -> None:
    if not (ROOT / PURE_MODULES[module]).exists():
        pytest.skip(f"{module} does not exist (yet)")
    assert problems(module) == []


def test_purity_checker_sees_every_import_form() -> None:
    source = (
        "import os.path as p\n"
        "from time import monotonic\n"
        "from ..membrane import Membrane\n"
        "from . import vesicle\n"
        "def f():\n"
        "    import random\n"
        "    __import__('socket')\n"
    )
    names = {name for _, name in imports(source, "cellmesh.wire.codec")}
    assert names == {
        "os.path", "time", "cellmesh.membrane", "cellmesh.wire.vesicle", "random", "__import__",
    }


def test_purity_checker_names_module_and_import(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "bad.py").write_text("import trio\nfrom .vesicle import Vesicle\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    monkeypatch.setitem(PURE_MODULES, "cellmesh.wire.bad", "bad.py")
    assert problems("cellmesh.wire.bad") == [
        "cellmesh.wire.bad imports trio (line 1)",
        "cellmesh.wire.bad imports the non-pure cellmesh module cellmesh.wire.vesicle (line 2)",
    ]

"""House rule 14: the folder list is the architecture.

Every module of ``cellmesh/`` belongs to one layer; a module may import its
own layer and the layers below it, never one above, and no two modules may
import each other, directly or around a loop. Both are read from the source
with ``ast`` (``cellmesh.testing.purity``), every import counted, those in
functions and ``if TYPE_CHECKING:`` blocks included. docs/architecture.md
explains the layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cellmesh
from cellmesh.testing.purity import import_cycles, import_graph, layer_violations

PACKAGE_DIR = Path(cellmesh.__file__).parent

#: Lowest first. A module belongs to the layer of its longest matching prefix.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("leaves", ("cellmesh.errors", "cellmesh.config", "cellmesh._util", "cellmesh._about")),
    ("wire", ("cellmesh.wire",)),
    ("transport", ("cellmesh.transport",)),
    ("sandbox", ("cellmesh.sandbox",)),
    ("consensus", ("cellmesh.consensus",)),
    ("actors", ("cellmesh.actors",)),
    ("ledger", ("cellmesh.ledger",)),
    ("api", ("cellmesh",)),  # the facade: cellmesh/__init__.py re-exports the public API
    ("testing", ("cellmesh.testing",)),
    ("bench", ("cellmesh.bench",)),
    ("cli", ("cellmesh.cli", "cellmesh.__main__")),
]


def layer_of(module: str) -> int:
    best, best_len = -1, -1
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = rank, len(prefix)
    if best < 0:
        raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")
    return best


def test_layers_every_module_has_a_layer() -> None:
    graph = import_graph(PACKAGE_DIR, "cellmesh")
    for module in graph:
        layer_of(module)


def test_layers_no_module_imports_a_higher_layer() -> None:
    assert layer_violations(import_graph(PACKAGE_DIR, "cellmesh"), layer_of) == []


def test_layers_no_import_cycle() -> None:
    assert import_cycles(import_graph(PACKAGE_DIR, "cellmesh")) == []


def test_layers_top_level_holds_only_leaves() -> None:
    """Top-level modules are the facade (with ``aio``, so that ``import cellmesh.aio``
    works), ``__main__`` and the small leaves."""
    top = sorted(p.name for p in PACKAGE_DIR.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "_about.py", "_util.py", "aio.py", "config.py",
                   "errors.py"]


def test_layers_every_package_says_what_it_may_import() -> None:
    for init in sorted(PACKAGE_DIR.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert "may import" in doc, f"{init.relative_to(PACKAGE_DIR)}: no layer rule in docstring"


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "cellmesh" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "cellmesh"


def test_layers_checker_catches_an_upward_import(tmp_path: Path) -> None:
    pkg = _write(tmp_path, {
        "__init__.py": "",
        "wire/__init__.py": "",
        "wire/codec.py": "def f():\n    from cellmesh.transport import membrane\n",
        "transport/__init__.py": "",
        "transport/membrane.py": "from ..wire import codec\n",
    })
    assert layer_violations(import_graph(pkg, "cellmesh"), layer_of) == [
        "cellmesh.wire.codec (line 2) imports the higher layer cellmesh.transport.membrane",
    ]


@pytest.mark.parametrize("guard", ["", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    "])
def test_layers_checker_catches_a_cycle(tmp_path: Path, guard: str) -> None:
    pkg = _write(tmp_path, {
        "__init__.py": "",
        "transport/__init__.py": "",
        "transport/a.py": "from .b import B\n",
        "transport/b.py": "from .c import C\n",
        "transport/c.py": f"{guard}from . import a\n",
        "transport/d.py": "from . import a\n",
    })
    assert import_cycles(import_graph(pkg, "cellmesh")) == [
        ["cellmesh.transport.a", "cellmesh.transport.b", "cellmesh.transport.c"],
    ]

"""House rule 3: the public API is exactly what ``cellmesh/__init__`` re-exports.

Modelled on the idea of trio's ``_tests/test_exports.py``: every name in
``__all__`` exists, appears once, and names a distinct object; nothing public
sits in the namespace without being listed. Subpackages that declare
``__all__`` get the existence and duplicate checks too.
"""

from __future__ import annotations
import __future__

import collections
import importlib
import types

import pytest

import cellmesh

PACKAGES_WITH_ALL = [
    "cellmesh",
    "cellmesh.errors",
    "cellmesh.consensus",
    "cellmesh.actors",
    "cellmesh.sandbox",
    "cellmesh.transport",
    "cellmesh.testing",
    "cellmesh.bench",
]


def test_exports_all_has_no_duplicates() -> None:
    counts = collections.Counter(cellmesh.__all__)
    assert [name for name, n in counts.items() if n > 1] == []


def test_exports_every_name_exists() -> None:
    missing = [name for name in cellmesh.__all__ if not hasattr(cellmesh, name)]
    assert missing == []


def test_exports_each_object_is_exported_once() -> None:
    by_object: dict[int, list[str]] = collections.defaultdict(list)
    for name in cellmesh.__all__:
        value = getattr(cellmesh, name)
        if isinstance(value, (str, int, float)):
            continue  # __version__ and other plain constants may coincide
        by_object[id(value)].append(name)
    assert [names for names in by_object.values() if len(names) > 1] == []


def test_exports_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from cellmesh import *", namespace)
    namespace.pop("__builtins__", None)
    assert sorted(namespace) == sorted(cellmesh.__all__)


def test_exports_no_unlisted_public_name() -> None:
    unlisted = [
        name
        for name, value in vars(cellmesh).items()
        if not name.startswith("_")
        and name not in cellmesh.__all__
        and not isinstance(value, (types.ModuleType, __future__._Feature))
    ]
    assert unlisted == []


def test_exports_are_importable_public_objects() -> None:
    for name in cellmesh.__all__:
        value = getattr(cellmesh, name)
        if isinstance(value, (type, types.FunctionType)):
            assert not value.__name__.startswith("_"), name
            assert value.__module__.startswith("cellmesh"), name


@pytest.mark.parametrize("package", PACKAGES_WITH_ALL)
def test_exports_subpackage_all_is_sound(package: str) -> None:
    module = importlib.import_module(package)
    names = list(getattr(module, "__all__", []))
    assert [n for n, c in collections.Counter(names).items() if c > 1] == []
    assert [n for n in names if not hasattr(module, n)] == []


def test_exports_the_asyncio_client_imports_every_documented_way() -> None:
    """``import cellmesh.aio``, ``from cellmesh.aio import Synapse``, ``from cellmesh import
    aio``, ``cellmesh.aio.Synapse``: one client; ``import cellmesh`` alone loads no asyncio."""
    import subprocess
    import sys

    code = (
        "import sys, cellmesh\n"
        "assert 'asyncio' not in sys.modules\n"
        "lazy = cellmesh.aio.Synapse\n"
        "import cellmesh.aio\n"
        "from cellmesh.aio import Synapse\n"
        "from cellmesh import aio\n"
        "from cellmesh.transport.aio import Synapse as Real\n"
        "assert Synapse is lazy is aio.Synapse is Real\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

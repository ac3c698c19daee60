"""The public API is exactly what cellmesh.sandbox re-exports, each name once."""

from __future__ import annotations

import ast
from pathlib import Path

from cellmesh import sandbox


def test_each_public_name_is_exported_once() -> None:
    assert len(sandbox.__all__) == len(set(sandbox.__all__))
    for name in sandbox.__all__:
        assert hasattr(sandbox, name), name


def test_init_only_re_exports() -> None:
    tree = ast.parse(Path(sandbox.__file__).read_text())
    for node in tree.body:
        assert isinstance(node, ast.ImportFrom | ast.Assign | ast.Expr), ast.dump(node)[:80]

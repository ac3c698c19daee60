"""``@protein`` refuses a field type proteins do not support when it runs, naming the
class, the field and the type (cellmesh/wire/proteins.py, docs/cells.md).

The schema compiled on first use only, so an unused bad protein passed the root's
import check, and in a client process it made every handshake fail (a hello carries
the fingerprints of all registered proteins). Annotations that name something not
defined yet stay accepted (checked on first use), and the schema itself is still
compiled on first use. Pure: no sockets.
"""

from __future__ import annotations

import datetime
import decimal
import typing
from typing import Annotated, Any, Optional

import pytest

from cellmesh.wire.proteins import (
    PROTEINS,
    EncodeContext,
    ProteinRegistry,
    encode_body,
    fingerprint,
    is_protein,
    protein,
)


def make(annotations: dict[str, Any], *, name: str = "Bad", base: type = object) -> type:
    """A class with these (string or object) annotations, as a module would define it."""
    return type(name, (base,), {"__annotations__": annotations, "__module__": __name__})


@pytest.mark.parametrize(
    ("annotation", "shown"),
    [
        ("datetime.datetime", "datetime.datetime"),
        (datetime.date, "datetime.date"),
        (decimal.Decimal, "decimal.Decimal"),
        ("set[str]", "set[str]"),
        ("list", "list"),
        ("object", "object"),
        ("Any", "typing.Any"),
        ("tuple[int, str]", "tuple[int, str]"),
        ("list[datetime.datetime]", "datetime.datetime"),
        ("int | datetime.datetime", "datetime.datetime"),
        ("Optional[set[int]]", "set[int]"),
        ("Annotated[complex, 'doc']", "complex"),
    ],
)
def test_an_unsupported_field_type_is_refused_by_the_decorator(
    annotation: object, shown: str
) -> None:
    reg = ProteinRegistry()
    with pytest.raises(TypeError) as info:
        protein("t.defs.Bad", registry=reg)(make({"ok": "int", "when": annotation}))
    text = str(info.value)
    assert text.startswith(f"Bad.when: field type {shown}"), text
    assert "is not supported by proteins" in text
    assert "t.defs.Bad" not in reg  # a refused class is never registered


def test_a_dict_with_keys_of_another_type_is_refused_by_the_decorator() -> None:
    with pytest.raises(TypeError, match=r"^Bad\.index: dict keys must be str or int, not float$"):
        protein("t.defs.Keys", registry=ProteinRegistry())(make({"index": "dict[float, str]"}))


def test_a_refused_protein_leaves_the_global_registry_and_handshakes_alone() -> None:
    """What a client process computes for every hello keeps working."""
    before = PROTEINS.fingerprints()
    with pytest.raises(TypeError, match=r"When\.at: field type datetime\.datetime"):

        @protein("t.defs.When")
        class When:
            at: datetime.datetime

    assert "t.defs.When" not in PROTEINS
    assert PROTEINS.fingerprints() == before


def test_an_inherited_field_is_checked_in_the_subclass_too() -> None:
    reg = ProteinRegistry()
    base: type = protein("t.defs.Base", registry=reg)(make({"n": "int"}, name="Base"))
    with pytest.raises(TypeError, match=r"^Sub\.tags: field type set\[str\]"):
        protein("t.defs.Sub", registry=reg)(make({"tags": "set[str]"}, name="Sub", base=base))


# ---------------------------------------------------------------------------
# What stays accepted: names not defined yet, recursion, lazy compilation.


REG = ProteinRegistry()


@protein("t.defs.Node", registry=REG)
class Node:  # refers to itself: the module binds the name after the decorator ran
    value: int
    next: Node | None
    children: list[Node]


@protein("t.defs.Early", registry=REG)
class Early:  # refers to a protein declared further down
    later: Later
    maybe: Optional[Later]  # noqa: UP045 - the typing spelling resolves the same way
    many: dict[str, list[Later]]
    tagged: Annotated[int, "a note"]


@protein("t.defs.Later", registry=REG)
class Later:
    x: int


def test_forward_and_recursive_references_are_accepted_and_compile_on_first_use() -> None:
    for cls in (Node, Early, Later):
        assert is_protein(cls)
        assert "__protein_schema__" not in cls.__dict__  # not compiled by the decorator
    assert encode_body(Node(1, Node(2, None, []), []), EncodeContext()) == [
        "t.defs.Node", 1, ["t.defs.Node", 2, None, []], [],
    ]
    assert encode_body(Early(Later(1), None, {"a": [Later(2)]}, 3), EncodeContext()) == [
        "t.defs.Early", ["t.defs.Later", 1], None, {"a": [["t.defs.Later", 2]]}, 3,
    ]
    assert "__protein_schema__" in Node.__dict__


def test_a_field_naming_something_undefined_is_checked_on_first_use_as_before() -> None:
    """Only what resolves is checked at once: one field that does not resolve yet (here
    never) does not keep the decorator from checking the others."""
    reg = ProteinRegistry()
    cls: type = protein("t.defs.Dangling", registry=reg)(make({"n": "int", "x": "NotYetDefined"}))
    with pytest.raises(
        NameError,
        match=r"^protein t\.defs\.Dangling \(test_protein_definition_errors\.Bad\): "
        r"a field's type does not resolve: name 'NotYetDefined' is not defined$",
    ) as info:
        fingerprint(cls)
    assert info.value.name == "NotYetDefined"
    with pytest.raises(TypeError, match=r"^Both\.bad: field type set\[int\]"):
        protein("t.defs.Both", registry=reg)(
            make({"x": "NotYetDefined", "bad": "set[int]"}, name="Both")
        )


def test_proteins_local_to_a_function_are_checked_where_they_resolve() -> None:
    reg = ProteinRegistry()

    @protein("t.defs.LocalInner", registry=reg)
    class LocalInner:
        x: int

    @protein("t.defs.LocalOuter", registry=reg)
    class LocalOuter:  # LocalInner is no module name: resolved (and checked) on first use
        inner: LocalInner
        n: typing.Annotated[int, "doc"]

    assert is_protein(LocalOuter) and is_protein(LocalInner)
    with pytest.raises(TypeError, match=r"LocalBad\.at: field type datetime\.time"):

        @protein("t.defs.LocalBad", registry=reg)
        class LocalBad:
            inner: LocalInner
            at: datetime.time

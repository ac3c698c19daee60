"""A receptor's return annotation against its request's declared reply (docs/cells.md,
"Typed replies"): a ``TypeError`` when the class is created, naming the receptor, what
it returns and the declared reply.

Another protein and ``None`` were refused, but an annotation that is not a protein
(``-> int``, ``-> dict[str, int]``) was accepted, and every call then failed at the
caller with "int is not a protein". Annotations here are strings (``from __future__
import annotations``), resolved as the class is created, like a user's.
"""

from __future__ import annotations

from typing import Any, NoReturn, Optional, TypeVar

import pytest

import cellmesh
from cellmesh import ReplicatedCell, query

T = TypeVar("T")


@cellmesh.protein("t.rannot.Total")
class Total:
    total: int


@cellmesh.protein("t.rannot.Other")
class Other:
    x: int


@cellmesh.protein("t.rannot.Add")
class Add(cellmesh.Request[Total]):
    n: int


@cellmesh.protein("t.rannot.Find")
class Find(cellmesh.Request[Optional[Total]]):  # noqa: UP045 - the documented Optional form
    n: int


@cellmesh.protein("t.rannot.Plain")
class Plain:  # declares no reply
    n: int


def define(request: type, returns: str, *, explicit: bool = False) -> type[cellmesh.Cell]:
    """A cell class whose receptor of ``request`` is annotated ``-> returns`` (with
    ``explicit``, declared as ``@receptor(request)``, its parameter annotated ``object``)."""
    name = request.__name__
    source = (
        "class Counter(cellmesh.Cell):\n"
        f"    @cellmesh.receptor{f'({name})' if explicit else ''}\n"
        f"    async def add(self, msg: {'object' if explicit else name}) -> {returns}:\n"
        "        raise NotImplementedError\n"
    )
    scope = {**globals(), "Any": Any, "NoReturn": NoReturn, "T": T}
    exec(compile("from __future__ import annotations\n" + source, "<cell>", "exec"), scope)
    cls = scope["Counter"]
    assert isinstance(cls, type) and issubclass(cls, cellmesh.Cell)
    return cls


@pytest.mark.parametrize(
    ("returns", "shown"),
    [
        ("int", "int"),
        ("str", "str"),
        ("dict[str, int]", "dict[str, int]"),
        ("list[Total]", "list["),
        ("object", "object"),
        ("bytes | None", "bytes | None"),
        ("Total | int", "int (in "),
        ("Other", "t.rannot.Other"),
        ("None", "None"),
        ("Total | None", "None"),
    ],
)
def test_a_return_annotation_that_breaks_the_declared_reply_is_a_type_error(
    returns: str, shown: str
) -> None:
    with pytest.raises(TypeError) as info:
        define(Add, returns)
    text = str(info.value)
    assert text.startswith("receptor Counter.add: returns "), text
    assert shown in text
    assert text.endswith("but t.rannot.Add declares the reply t.rannot.Total"), text


@pytest.mark.parametrize(
    ("request_cls", "returns"),
    [
        (Add, "Total"),
        (Add, "'Total'"),  # a quoted annotation, resolved the same way
        (Add, "Any"),  # not checked
        (Add, "NoReturn"),  # always raises: fits any reply
        (Add, "T"),
        (Find, "Total"),
        (Find, "Optional[Total]"),
        (Find, "Total | None"),
        (Find, "None"),
        (Plain, "int"),  # no declaration: nothing to break
        (Plain, "dict[str, int]"),
    ],
)
def test_return_annotations_that_fit_are_accepted(request_cls: type, returns: str) -> None:
    cls = define(request_cls, returns)
    assert cls._receptor_table == {request_cls: "add"}


def test_an_explicit_receptor_is_checked_too() -> None:
    with pytest.raises(TypeError, match=r"^receptor Counter\.add: returns int but t\.rannot"
                                        r"\.Add declares the reply t\.rannot\.Total$"):
        define(Add, "int", explicit=True)
    assert define(Add, "Total", explicit=True)._receptor_table == {Add: "add"}
    # a return annotation that does not resolve is not judged (as before)
    assert define(Add, "NoSuchName", explicit=True)._receptor_table == {Add: "add"}


def test_a_replicated_cells_query_is_checked_and_named_a_query() -> None:
    with pytest.raises(TypeError, match=r"query .*Ledger\.total: returns int but t\.rannot"
                                        r"\.Add declares the reply t\.rannot\.Total"):

        class Ledger(ReplicatedCell):
            @query
            def total(self, q: Add) -> int:
                return 1

    class Fine(ReplicatedCell):
        @query
        def total(self, q: Add) -> Total:
            return Total(q.n)

    assert Add in Fine._query_table

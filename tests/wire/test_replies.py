"""Typed replies: Request[R] declarations, resolution, and the run-time reply check."""

from __future__ import annotations

from typing import TypeVar

import pytest

import cellmesh
from cellmesh import Request, UnexpectedReply
from cellmesh.wire.replies import check_replies, check_reply, reply_types, return_problem

R = TypeVar("R")


@cellmesh.protein("test.rp.Pong")
class Pong:
    n: int


@cellmesh.protein("test.rp.Other")
class Other:
    n: int


@cellmesh.protein("test.rp.Ping")
class Ping(Request[Pong]):
    n: int


@cellmesh.protein("test.rp.Maybe")
class Maybe(Request[Pong | None]):
    n: int


@cellmesh.protein("test.rp.Later")
class Later(Request["Pong | Other"]):
    n: int


class Keyed(Request[R]):
    """A generic request base: its subclasses bind the reply."""

    __slots__ = ()


@cellmesh.protein("test.rp.Get")
class Get(Keyed[Other]):
    key: str


@cellmesh.protein("test.rp.Plain")
class Plain:
    n: int


@cellmesh.protein("test.rp.Nothing")
class Nothing(Request[None]):
    n: int


def test_reply_types_read_the_declaration() -> None:
    assert reply_types(Ping) == (Pong,)
    assert reply_types(Maybe) == (Pong, type(None))
    assert reply_types(Later) == (Pong, Other)
    assert reply_types(Get) == (Other,)
    assert reply_types(Nothing) == (type(None),)
    assert reply_types(Plain) is None


def test_a_request_protein_is_still_a_plain_frozen_protein() -> None:
    ping = Ping(3)
    assert ping == Ping(n=3) and cellmesh.wire_name(Ping) == "test.rp.Ping"
    with pytest.raises(AttributeError):
        ping.n = 4  # type: ignore[misc]
    with pytest.raises(AttributeError):
        ping.extra = 1  # type: ignore[attr-defined]  # slots: no __dict__ from the base


def test_check_reply_passes_the_declared_type_and_anything_undeclared() -> None:
    assert check_reply(Ping(1), Pong(1), "c") == Pong(1)
    assert check_reply(Maybe(1), None, "c") is None
    assert check_reply(Plain(1), Other(1), "c") == Other(1)
    assert check_replies([Ping(1), Plain(2), Later(3)], [Pong(1), None, Other(3)],
                         cell="c") == [Pong(1), None, Other(3)]


def test_check_reply_raises_a_typed_error_naming_everything() -> None:
    with pytest.raises(UnexpectedReply) as info:
        check_reply(Ping(1), Other(1), "pong")
    err = info.value
    assert (err.cell, err.request, err.expected, err.got) == (
        "pong", "test.rp.Ping", ("test.rp.Pong",), "test.rp.Other"
    )
    assert str(err) == "cell 'pong' answered test.rp.Ping with test.rp.Other; expected test.rp.Pong"
    with pytest.raises(UnexpectedReply) as info:
        check_replies([Ping(1), Maybe(2)], [Pong(1), Other(2)], cell="pong")
    assert info.value.expected == ("test.rp.Pong", "None")
    with pytest.raises(UnexpectedReply):
        check_reply(Ping(1), None, "pong")


def test_a_reply_type_that_is_not_a_protein_is_refused_on_first_use() -> None:
    @cellmesh.protein("test.rp.BadReply")
    class BadReply(Request[int]):
        n: int

    with pytest.raises(TypeError, match="must be a protein class, None or a union"):
        reply_types(BadReply)

    @cellmesh.protein("test.rp.Dangling")
    class Dangling(Request["NoSuchName"]):  # type: ignore[name-defined]
        n: int

    with pytest.raises(TypeError, match="cannot resolve the reply type 'NoSuchName'"):
        reply_types(Dangling)


def test_return_problem_compares_a_receptor_annotation_with_the_declaration() -> None:
    assert return_problem(Ping, Pong) is None
    assert return_problem(Maybe, Pong) is None
    assert return_problem(Plain, Other) is None
    assert return_problem(Ping, Pong | None) == (
        "returns None but test.rp.Ping declares the reply test.rp.Pong"
    )
    assert return_problem(Ping, object) is None  # nothing to compare

"""A small typed cellmesh program: ``mypy --strict`` must pass it (tests/test_typing.py).

Each ``reveal_type`` is checked against the comment at the end of its line.
"""

from __future__ import annotations

from typing import reveal_type

import cellmesh


@cellmesh.protein("typing.Pong")
class Pong:
    n: int


@cellmesh.protein("typing.Ping")
class Ping(cellmesh.Request[Pong]):
    n: int


@cellmesh.protein("typing.Get")
class Get(cellmesh.Request[Pong | None]):
    key: str


@cellmesh.protein("typing.Note")
class Note:
    """Declares no reply: untyped use keeps working."""

    text: str


class Relay(cellmesh.Cell):
    @cellmesh.receptor
    async def ping(self, msg: Ping) -> Pong:
        return await self.call("other", Ping(msg.n))  # no `no-any-return` under --strict

    @cellmesh.receptor
    async def get(self, msg: Get) -> Pong | None:
        reveal_type(await self.call("other", msg))  # R: typed_ok.Pong | None
        return await self.call("other", msg)


async def use(syn: cellmesh.Synapse) -> int:
    pong = await syn.fire(Ping(1))
    reveal_type(pong)  # R: typed_ok.Pong
    reveal_type(await syn.fire_many([Ping(1), Ping(2)]))  # R: list[typed_ok.Pong]
    reveal_type(await syn.fire(Get("k")))  # R: typed_ok.Pong | None
    reveal_type(await syn.fire_many([Ping(1), Get("k")]))  # R: list[typed_ok.Pong | None]
    reveal_type(await syn.fire(Note("x")))  # R: Any
    untyped: str = await syn.fire(Note("x"))  # Any: assignable to anything, as before
    return pong.n + len(untyped)


async def use_asyncio(syn: cellmesh.aio.Synapse) -> None:
    reveal_type(await syn.fire(Ping(1)))  # R: typed_ok.Pong
    reveal_type(await syn.fire_many([Get("a")]))  # R: list[typed_ok.Pong | None]


def use_blocking(syn: cellmesh.BlockingSynapse) -> None:
    reveal_type(syn.fire(Ping(1), timeout=1.0))  # R: typed_ok.Pong
    reveal_type(syn.fire(Note("x")))  # R: Any

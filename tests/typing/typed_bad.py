"""Misuses of typed replies: `mypy --strict` must report the marked error on each marked line."""

from __future__ import annotations

import cellmesh


@cellmesh.protein("typing_bad.Pong")
class Pong:
    n: int


@cellmesh.protein("typing_bad.Ping")
class Ping(cellmesh.Request[Pong]):
    n: int


@cellmesh.protein("typing_bad.Get")
class Get(cellmesh.Request[Pong | None]):
    key: str


class Relay(cellmesh.Cell):
    @cellmesh.receptor
    async def ping(self, msg: Ping) -> Pong:
        return await self.call("other", Get("k"))  # E: arg-type


async def use(syn: cellmesh.Synapse) -> None:
    pong: Pong = await syn.fire(Get("k"))  # E: arg-type
    text: str = (await syn.fire(Ping(1))).n  # E: assignment
    await syn.fire(Ping(1)).n  # E: attr-defined
    pongs: list[Ping] = await syn.fire_many([Ping(1)])  # E: list-item
    del pong, text, pongs

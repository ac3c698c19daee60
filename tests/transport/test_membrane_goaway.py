"""Membrane.goaway: a live membrane asks its connections to move (a replica that stops
leading does), calls in flight still finish, new calls use a new connection."""

from __future__ import annotations

import tempfile
from pathlib import Path

import trio
import trio.testing

import cellmesh
from cellmesh import Receptors, Synapse, open_membrane


@cellmesh.protein("t.goaway.Wait")
class Wait:
    n: int


async def test_membrane_goaway_moves_clients_without_losing_calls() -> None:
    release = trio.Event()

    async def handler(msg: Wait) -> Wait:
        if msg.n == 1:
            await release.wait()
        return msg

    with tempfile.TemporaryDirectory(prefix="cmg-", dir="/tmp") as name, trio.fail_after(10):
        path = Path(name) / "m.sock"
        async with open_membrane("m", Receptors({Wait: handler}), socket_path=path) as mem:
            async with Synapse.grow("m", socket_path=path) as syn, trio.open_nursery() as n:
                got: list[Wait] = []

                async def first() -> None:
                    got.append(await syn.fire(Wait(1)))

                n.start_soon(first)
                await trio.testing.wait_all_tasks_blocked()
                mem.goaway("no longer the leader")
                await trio.testing.wait_all_tasks_blocked()
                assert await syn.fire(Wait(2)) == Wait(2)  # on a new connection
                assert mem.stats.connections == 2
                release.set()
            assert got == [Wait(1)]  # the call in flight finished on the old one

"""Spare role tasks: a membrane reuses the tasks of handlers that awaited.

A handler that awaits (it calls another cell, sleeps, takes a lock) suspends,
and the task it suspended in owns its call until it answers. That task then
waits as a *spare* for the next role (reader, starter, owner) instead of
ending, so a stream of such calls does not cost a task spawn (and a fresh
cancel scope) per call. Spares are bounded by ``max_concurrency``, released
once the connection is quiet, and a task whose call was cancelled is never
reused. Real sockets, membrane and synapse in one Trio run; nothing is timed.
"""

from __future__ import annotations

from pathlib import Path

import trio

import cellmesh
from cellmesh import Receptors, Synapse, open_membrane
from cellmesh.wire.proteins import ProteinRegistry

REG = ProteinRegistry()


@cellmesh.protein("test.sp.Nap", registry=REG)
class Nap:
    n: int


@cellmesh.protein("test.sp.Hang", registry=REG)
class Hang:
    n: int


class Cell:
    """``Nap`` awaits one checkpoint, then echoes; ``Hang`` waits until cancelled."""

    def __init__(self) -> None:
        self.order: list[int] = []
        self.hanging = 0
        self.hung = trio.Event()
        self.cancelled = 0
        self.hang_task: trio.lowlevel.Task | None = None
        r = self.receptors = Receptors()
        r.add(Nap, self.nap)
        r.add(Hang, self.hang)

    async def nap(self, msg: Nap) -> Nap:
        self.order.append(msg.n)
        await trio.lowlevel.checkpoint()
        return msg

    async def hang(self, msg: Hang) -> Hang:
        self.hanging += 1
        self.hang_task = trio.lowlevel.current_task()  # the task that owns this call
        self.hung.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            self.cancelled += 1
            raise
        raise AssertionError("unreachable")


class SpawnCounter(trio.abc.Instrument):
    """Counts the tasks spawned in this Trio run."""

    def __init__(self) -> None:
        self.spawned = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.spawned += 1


async def _rounds(syn: Synapse, rounds: int, k: int, cell: Cell) -> None:
    for r in range(rounds):
        cell.order.clear()
        batch = [Nap(r * k + i) for i in range(k)]
        assert await syn.fire_many(batch) == batch  # one frame of k calls
        assert cell.order == [m.n for m in batch]  # started in arrival order


async def test_tasks_of_awaiting_handlers_are_reused_not_respawned(sockdir: Path) -> None:
    cell = Cell()
    k = 64
    counter = SpawnCounter()
    async with open_membrane("sp", cell.receptors, socket_dir=sockdir, registry=REG) as membrane:
        async with Synapse.grow("sp", socket_dir=sockdir, registry=REG) as syn:
            await _rounds(syn, 1, k, cell)  # the first frame spawns its tasks
            (conn,) = membrane._connections
            trio.lowlevel.add_instrument(counter)
            try:
                await _rounds(syn, 8, k, cell)
            finally:
                trio.lowlevel.remove_instrument(counter)
            # 8 frames of 64 suspending calls: before spares, 512 spawns (one per call).
            assert counter.spawned <= 8, counter.spawned
            assert len(conn.spares) >= k // 2, len(conn.spares)
            assert conn.suspended == 0 and conn.starters == 0


async def test_spares_are_bounded_by_max_concurrency(sockdir: Path) -> None:
    cell = Cell()
    async with open_membrane(
        "sp", cell.receptors, socket_dir=sockdir, registry=REG, max_concurrency=4
    ) as membrane:
        async with Synapse.grow("sp", socket_dir=sockdir, registry=REG) as syn:
            await _rounds(syn, 3, 64, cell)  # 64 calls per frame, at most 4 at once
            (conn,) = membrane._connections
            assert 1 <= len(conn.spares) <= 4, len(conn.spares)


async def test_a_quiet_connection_releases_its_spares_and_still_serves(sockdir: Path) -> None:
    cell = Cell()
    async with open_membrane(
        "sp", cell.receptors, socket_dir=sockdir, registry=REG, idle_timeout=0.4
    ) as membrane:
        async with Synapse.grow("sp", socket_dir=sockdir, registry=REG) as syn:
            await _rounds(syn, 2, 32, cell)
            (conn,) = membrane._connections
            assert conn.spares
            with trio.fail_after(10):  # the idle watch looks every idle_timeout / 4
                while conn.spares:
                    await trio.sleep(0.01)
            await _rounds(syn, 2, 32, cell)  # the connection still serves, in order


async def test_a_cancelled_owner_is_not_reused_and_reused_owners_still_cancel(
    sockdir: Path,
) -> None:
    """A task's cancel scope serves once: the task whose call the caller cancelled
    ends instead of waiting as a spare; a call owned by a reused task cancels too."""
    cell = Cell()
    async with open_membrane("sp", cell.receptors, socket_dir=sockdir, registry=REG) as membrane:
        async with Synapse.grow("sp", socket_dir=sockdir, registry=REG) as syn:
            await _rounds(syn, 2, 16, cell)  # spares exist now
            (conn,) = membrane._connections
            for attempt in range(1, 4):
                cell.hung = trio.Event()
                with trio.CancelScope() as scope:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(syn.fire, Hang(attempt))
                        await cell.hung.wait()  # its handler runs in a reused task
                        assert len(conn.owned) == 1  # the owner's scope, by call id
                        scope.cancel()  # the caller gives up: a cancel frame
                with trio.fail_after(10):
                    while cell.cancelled < attempt or conn.suspended:
                        await trio.sleep(0.01)
                assert membrane.stats.cancelled == attempt
                assert cell.hang_task not in conn.spares.tasks()
                await _rounds(syn, 2, 16, cell)  # still serves, in order
            assert cell.hanging == 3

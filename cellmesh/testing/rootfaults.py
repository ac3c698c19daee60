"""Faults and checks against a replicated cell run by a real root, for Jepsen-style tests.

Theory of operation
-------------------
A test serves a root (:func:`~cellmesh.testing.open_root`) whose manifest
declares a replicated cell, runs its own workload against it, and uses
:class:`RootGroup` to hurt the group and to check it afterwards:

* faults: :meth:`RootGroup.kill` (SIGKILL through the root's control socket,
  as ``cellmesh kill X/i``: the replica's supervisor restarts it) and
  :meth:`RootGroup.pause` (SIGSTOP of the replica's whole sandbox tree for a
  while, then SIGCONT); :func:`nemesis` runs the standard schedule (kill -9
  the leader, pause the next leader past an election timeout, kill each
  follower in turn), within what each replica's supervisor allows
  (:class:`KillBudget`);
* waits, driven by the root's own change events (never by sleeping):
  :func:`until`, :meth:`RootGroup.a_leader`, :meth:`RootGroup.new_leader`,
  :meth:`RootGroup.converge`;
* the final check every replicated cell owes: :meth:`RootGroup.identical`
  (every member has applied the same index and holds byte-identical state).

The workload's checks stay with the test (what its state machine promises
is its own business). :class:`Clients` runs its concurrent clients until
stopped and counts their acknowledged writes; :func:`nemesis` only needs a
``progress(n)`` coroutine that returns once the workload made ``n`` more;
:func:`under_faults` runs a workload (any :class:`Load`) through the nemesis.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

import attrs
import trio

from ..actors._replicas_group import REPLICA_INTENSITY, REPLICA_PERIOD
from ..actors.control import KillCell
from ..actors.replicated_proteins import StateDigest, StateDigestRequest
from ..actors.root import Root
from ..sandbox._bwrap import descendants
from ..transport.synapse import Synapse

#: Longer than a replica's election timeout (20 ticks of 20 ms) many times over.
PAUSE: Final = 2.0


async def until(root: Root, predicate: Callable[[], bool], what: str, timeout: float = 90) -> None:
    """Wait until ``predicate()`` holds, re-checked on every slot change and stats report.

    AssertionError naming ``what`` (and the root's status) after ``timeout`` seconds.
    """
    with trio.move_on_after(timeout):
        while not predicate():
            async with trio.open_nursery() as nursery:
                for slot in list(root.slots.values()):
                    nursery.start_soon(_wake, slot.changed, nursery.cancel_scope)
                for group in root._replicas.groups.values():
                    nursery.start_soon(_wake, group.changed, nursery.cancel_scope)
        return
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; "
                         f"status: {root.status().cells}")


async def _wake(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


@attrs.define(eq=False)
class RootGroup:
    """The replicated cell ``name`` of ``root``: its view, faults and checks (module doc)."""

    root: Root
    name: str

    # -- what the root sees ------------------------------------------------------------

    def leader(self) -> int | None:
        """The leader as the root sees it (from the replicas' stats); None during elections."""
        return self.root._replicas.groups[self.name].view().leader

    def term(self) -> int:
        """The leader's term as the root sees it (0 without a leader)."""
        return self.root._replicas.groups[self.name].view().term or 0

    def members(self) -> list[int]:
        """The replica ids the root runs."""
        return list(self.root._replicas.groups[self.name].record.members)

    async def a_leader(self) -> int:
        """The leader, once every member runs again (so a fault never takes the majority)."""

        def ready() -> bool:
            group = self.root._replicas.groups[self.name]
            return group.view().leader is not None and len(group.stats()) == len(group.members)

        await until(self.root, ready, f"every replica of {self.name} running and a leader")
        found = self.leader()
        assert found is not None
        return found

    async def new_leader(self, after: int) -> None:
        """Wait for a leader elected after term ``after`` (the killed one may win again:
        restarted from its log, it is as up to date as any)."""
        await until(self.root, lambda: self.leader() is not None and self.term() > after,
                    f"a leader of {self.name} in a term after {after}")

    # -- faults ------------------------------------------------------------------------------

    async def kill(self, replica: int) -> None:
        """SIGKILL one replica through the root's control socket (``cellmesh kill X/i``)."""
        async with Synapse.grow("mitosis", socket_path=self.root.paths.umbilical) as ctl:
            await ctl.fire(KillCell(name=f"{self.name}/{replica}"))

    def replica_pids(self, replica: int) -> list[int]:
        """Every process of the replica's serving sandbox (bwrap, its init, the runtime)."""
        slot = self.root.slots[f"{self.name}/{replica}"]
        assert slot.instance is not None
        pid = self.root.backend.process_id(slot.instance.cell_id)
        assert pid is not None
        return [pid, *descendants(pid)]

    async def pause(self, replica: int, seconds: float = PAUSE) -> None:
        """SIGSTOP the replica's whole process tree for ``seconds``, then SIGCONT it."""
        pids = self.replica_pids(replica)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        try:
            await trio.sleep(seconds)  # the fault itself: a pause longer than an election
        finally:
            for pid in reversed(pids):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    # -- checks ---------------------------------------------------------------------------------

    async def converge(self, *, expect_members: int | None = None) -> None:
        """Wait until every member runs, votes, and has applied the leader's whole log."""

        def done() -> bool:
            group = self.root._replicas.groups[self.name]
            stats = group.stats()
            view = group.view()
            if view.leader is None or set(stats) != set(group.record.members):
                return False
            if expect_members is not None and len(group.record.members) != expect_members:
                return False
            ends = {(s.commit_index, s.applied_index) for s in stats.values()}
            return len(ends) == 1 and next(iter(ends))[1] >= (view.leader_last_index or 0)

        await until(self.root, done, f"the replicas of {self.name} to converge")

    async def digests(self) -> dict[int, StateDigest]:
        """Every member's state digest, asked on its peer socket."""
        out: dict[int, StateDigest] = {}
        for replica in self.members():
            path = self.root.paths.socket_dir / ".replicas" / self.name / f"{replica}.sock"
            async with Synapse.grow(self.name, socket_path=path, client_name="test") as syn:
                digest = await syn.fire(StateDigestRequest())
            assert isinstance(digest, StateDigest)
            out[replica] = digest
        return out

    async def identical(self) -> dict[int, StateDigest]:
        """Assert the members' replicated states are byte-identical; their digests.

        Entries may still arrive after the workload (a closing client's session
        goodbye is one): the digests are compared once every member has applied
        the same index.
        """
        group = self.root._replicas.groups[self.name]
        with trio.fail_after(60):
            while True:
                found = await self.digests()
                target = max(d.applied_index for d in found.values())
                if all(d.applied_index == target for d in found.values()):
                    break
                # a member is applying the last entries: wait for its stats to say so
                await until(self.root, lambda t=target: all(  # type: ignore[misc]
                    s.applied_index >= t for s in group.stats().values()
                ), f"every replica of {self.name} to apply index {target}")
        kinds = {(d.applied_index, d.sha256, d.size) for d in found.values()}
        assert len(kinds) == 1, f"replicas of {self.name} differ: {found}"
        return found


@attrs.define
class KillBudget:
    """Kills within what each replica's supervisor allows (``REPLICA_INTENSITY`` restarts in
    ``REPLICA_PERIOD`` s, one kept in reserve): more would get a replica given up -- the
    supervisor doing its job, but not what a fault test is about."""

    kills: dict[int, list[float]] = attrs.Factory(dict)

    def allows(self, replica: int) -> float:
        """0 when ``replica`` may be killed now, else how long until it may."""
        now = trio.current_time()
        recent = [t for t in self.kills.get(replica, []) if now - t < REPLICA_PERIOD]
        self.kills[replica] = recent
        if len(recent) < REPLICA_INTENSITY - 1:
            return 0.0
        return REPLICA_PERIOD - (now - recent[0])

    async def kill(self, group: RootGroup, pick: Callable[[], Awaitable[int]]) -> int:
        """Kill the replica ``pick()`` names, waiting out its budget first; return it."""
        while True:
            victim = await pick()
            wait = self.allows(victim)
            if wait == 0.0:
                self.kills[victim].append(trio.current_time())
                await group.kill(victim)
                return victim
            await trio.sleep(wait)  # the fault schedule: the window must move on


async def nemesis(
    group: RootGroup,
    progress: Callable[[int], Awaitable[None]],
    *,
    cycles: int,
    writes: int,
    pause: float = PAUSE,
) -> None:
    """Each cycle: kill -9 the leader; pause the next leader past an election timeout;
    kill each follower in turn. ``progress(writes)`` must return after each fault (the
    workload made ``writes`` more acknowledged writes: the group serves again)."""
    budget = KillBudget()
    for _ in range(cycles):
        before = group.term()
        await budget.kill(group, group.a_leader)
        await group.new_leader(before)
        await progress(writes)
        second = await group.a_leader()
        await group.pause(second, pause)
        await progress(writes)
        for turn in range(2):

            async def follower(turn: int = turn) -> int:
                current = await group.a_leader()
                followers = [i for i in group.members() if i != current]
                return followers[turn % len(followers)]

            await budget.kill(group, follower)
            await progress(writes)


class Load(Protocol):
    """A workload :func:`under_faults` can drive (:class:`Clients` is one)."""

    async def run(self, *, task_status: trio.TaskStatus[None] = ...) -> None:
        """Run the clients until :meth:`stop` (started: once they run)."""

    def stop(self) -> None:
        """Let each client finish its current operation and end."""

    async def progress(self, more: int) -> None:
        """Return once ``more`` further writes have been acknowledged."""


@attrs.define(eq=False)
class Clients:
    """``count`` concurrent clients, each ``client(n)``, until :meth:`stop`.

    A client loops until :attr:`stopping` (checked between its operations)
    and calls :meth:`acked` for each acknowledged write; :meth:`progress`
    waits for the count to grow (at most ``progress_timeout`` seconds: a
    group that stopped serving fails the test rather than hanging it).
    """

    client: Callable[[int], Awaitable[None]]
    count: int
    progress_timeout: float = 120.0
    _acks: int = 0
    _waiters: list[tuple[int, trio.Event]] = attrs.Factory(list)
    _stop: trio.Event = attrs.Factory(trio.Event)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the clients until :meth:`stop`."""
        async with trio.open_nursery() as nursery:
            for n in range(self.count):
                nursery.start_soon(self.client, n)
            task_status.started()

    def stop(self) -> None:
        """Let each client finish its current operation and end."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stop.is_set()

    async def progress(self, more: int) -> None:
        """Wait until ``more`` further writes have been acknowledged."""
        event = trio.Event()
        self._waiters.append((self._acks + more, event))
        with trio.fail_after(self.progress_timeout):
            await event.wait()

    def acked(self) -> None:
        """Count one acknowledged write (wakes the :meth:`progress` waiters it satisfies)."""
        self._acks += 1
        for goal, event in list(self._waiters):
            if self._acks >= goal:
                event.set()
                self._waiters.remove((goal, event))


async def under_faults(group: RootGroup, load: Load, *, cycles: int, writes: int) -> dict[str, int]:
    """Run ``load`` through :func:`nemesis` (``writes`` acknowledged before the first fault
    and after each); stop it; the restarts per cell (at least three per cycle: asserted)."""
    async with trio.open_nursery() as nursery:
        await nursery.start(load.run)
        await load.progress(writes)
        await nemesis(group, load.progress, cycles=cycles, writes=writes)
        load.stop()
    restarts = {c.name: c.restarts for c in group.root.status().cells}
    assert sum(restarts.values()) >= 3 * cycles, restarts
    return restarts


__all__ = [
    "PAUSE", "Clients", "KillBudget", "Load", "RootGroup", "nemesis", "under_faults", "until",
]

"""Getting operations into a replica group's log: group commit, forwarding, read barriers.

Theory of operation
-------------------
:class:`Batcher` (leader only) is group commit at the entry level: every
operation submitted while the previous batch is being taken joins one
queue; a single task drains it into Raft entries of up to ``max_ops`` ops
(``max_bytes`` of command bytes), each proposed without a task per client
(``propose_nowait``), at most ``max_inflight`` entries in flight. So 64
concurrent clients cost about one entry, one WAL write and one fsync per
round, not 64. An op submitted while nothing is in flight or queued is
proposed at once by its submitter (a lone client pays no hop through the
batching task). The entry's results come back in one callback and wake each
submitter.

:class:`Router` is the path of one operation from whichever replica
received it to the leader and back: at the leader it goes to the
:class:`Batcher`; at a follower it is forwarded over the peer sockets
(:class:`~cellmesh.actors.replicated_proteins.Forward`) to the replica the
node believes leads. It retries, invisibly to the client, wherever retrying
cannot apply the op twice: after ``NotLeader``/refusals and
``ProposalDropped`` (never applied) always; after an unknown outcome (a
leader lost mid-flight, a broken forward) only for ops inside a client
session, which the state machine deduplicates. A sessionless op with an
unknown outcome raises :class:`~cellmesh.errors.OutcomeUnknown`. When the
node stops (the replica is going down), nothing is answered: the client sees
its connection close and resends elsewhere.

:class:`ReadBarrier` makes queries linearizable with one ReadIndex round
(dissertation 6.4) per batch of concurrent queries: a query waits for the
first round that *starts* after it arrived, then reads local state.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import attrs
import cbor2
import trio

from .._util import settle
from ..consensus import (
    NodeStopped,
    NotLeader,
    ProposalDropped,
    ProposalOutcomeUnknown,
    RaftNode,
    Role,
)
from ..errors import CellmeshError, CellUnavailable, OutcomeUnknown
from ._replica_entries import OpKind, decode_results, encode_batch
from ._replica_spec import replica_id
from .replicated_proteins import Forward, Forwarded, ForwardRefused

#: Ops in one entry, and command bytes in one entry, at most.
MAX_OPS: Final = 2048
MAX_BYTES: Final = 256 * 1024
#: Entries proposed by the batcher and not yet applied, at most. Small on purpose:
#: ops that arrive while two entries are in flight wait and share the next one
#: (Nagle-like), which is what makes entries large under load; a lone client
#: never waits (nothing is in flight).
MAX_INFLIGHT: Final = 2
#: Scheduling rounds the batcher yields for concurrent submitters to queue.
_SETTLE_ROUNDS: Final = 4


def _op_size(op: list[Any]) -> int:
    return len(op[4]) if op[0] == OpKind.COMMAND else 16


@attrs.define(eq=False)
class _Slot:
    """One submitted op waiting for its result."""

    op: list[Any]
    result: list[Any] | None = None
    error: BaseException | None = None
    abandoned: bool = False
    done: trio.Event = attrs.Factory(trio.Event)

    def resolve(self, result: list[Any] | None, error: BaseException | None) -> None:
        if not self.done.is_set():
            self.result = result
            self.error = error
            self.done.set()


@attrs.define(eq=False)
class BatchStats:
    """Counters of the batcher: entries proposed and ops they carried."""

    entries: int = 0
    ops: int = 0


@attrs.define(eq=False)
class Batcher:
    """Leader-side group commit: many ops per Raft entry (see module docstring)."""

    node: RaftNode
    clock: Callable[[], int] = time.time_ns
    max_ops: int = MAX_OPS
    max_bytes: int = MAX_BYTES
    max_inflight: int = MAX_INFLIGHT
    stats: BatchStats = attrs.Factory(BatchStats)
    _queue: list[_Slot] = attrs.Factory(list)
    _wakeup: trio.Event = attrs.Factory(trio.Event)
    _inflight: int = 0
    _room: trio.Event = attrs.Factory(trio.Event)

    async def submit(self, op: list[Any]) -> list[Any]:
        """Propose ``op`` in the next entry; its result once applied here.

        Raises ``NotLeader``, ``ProposalDropped``, ``ProposalOutcomeUnknown``
        or ``NodeStopped`` as the node does. If the caller is cancelled, an op
        not yet proposed is dropped; one already proposed may still apply.
        """
        slot = _Slot(op)
        if self._inflight == 0 and not self._queue:
            self._propose([slot])  # nothing to batch with: no hop through the batcher task
        else:
            self._queue.append(slot)
            self._wakeup.set()
        try:
            await slot.done.wait()
        finally:
            if not slot.done.is_set():
                slot.abandoned = True
        if slot.error is not None:
            raise slot.error
        assert slot.result is not None
        return slot.result

    async def run(self) -> None:
        """The batching task: take queued ops, propose them as entries, forever."""
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            await settle(_SETTLE_ROUNDS)
            while self._queue:
                while self._inflight >= self.max_inflight:
                    self._room = trio.Event()
                    await self._room.wait()
                self._propose(self._take())

    def _take(self) -> list[_Slot]:
        batch: list[_Slot] = []
        size = 0
        queue = self._queue
        taken = 0
        for slot in queue:
            if slot.abandoned:
                taken += 1
                continue
            cost = _op_size(slot.op)
            if batch and (len(batch) >= self.max_ops or size + cost > self.max_bytes):
                break
            batch.append(slot)
            size += cost
            taken += 1
        del queue[:taken]
        return batch

    def _propose(self, batch: list[_Slot]) -> None:
        if not batch:
            return
        data = encode_batch(self.clock(), [slot.op for slot in batch])
        try:
            self.node.propose_nowait(data, lambda result, error: self._done(batch, result, error))
        except trio.WouldBlock:
            self._queue[:0] = batch  # the node's own limit: retry when an entry applies
            self._inflight = self.max_inflight
            return
        except (NotLeader, ProposalDropped, NodeStopped) as exc:
            for slot in batch:
                slot.resolve(None, exc)
            return
        self._inflight += 1
        self.stats.entries += 1
        self.stats.ops += len(batch)

    def _done(self, batch: list[_Slot], result: bytes | None, error: BaseException | None) -> None:
        """Called from the node's loop: wake every submitter of the entry."""
        self._inflight = max(0, self._inflight - 1)
        self._room.set()
        if error is None:
            assert result is not None
            try:
                results = decode_results(result, len(batch))
            except ValueError as exc:
                error = exc
            else:
                for slot, value in zip(batch, results, strict=True):
                    slot.resolve(value, None)
                return
        for slot in batch:
            slot.resolve(None, error)


@attrs.define(eq=False)
class _Round:
    done: trio.Event = attrs.Factory(trio.Event)


@attrs.define(eq=False)
class ReadBarrier:
    """Batched ReadIndex: :meth:`wait` returns once local state is linearizable."""

    node: RaftNode
    wait_leader: Callable[[], Awaitable[None]]
    _next: _Round = attrs.Factory(_Round)
    _wanted: trio.Event = attrs.Factory(trio.Event)
    rounds: int = 0

    async def wait(self) -> None:
        """Return once this replica has applied everything committed before the call."""
        round_ = self._next
        self._wanted.set()
        await round_.done.wait()

    async def run(self) -> None:
        """The task running one ReadIndex round at a time for every waiting query."""
        while True:
            await self._wanted.wait()
            self._wanted = trio.Event()
            current, self._next = self._next, _Round()
            while True:
                try:
                    await self.node.read(b"")
                    break
                except NotLeader:
                    await self.wait_leader()  # no leader known: wait for one, retry
                except NodeStopped:
                    await trio.sleep_forever()  # the replica is going down with this task
            self.rounds += 1
            current.done.set()


class Refused(Exception):
    """A forward reached a replica that does not lead (it believes ``leader`` does)."""

    def __init__(self, leader: int | None) -> None:
        super().__init__(f"not the leader (hint: {leader})")
        self.leader = leader


ForwardFn = Callable[[int, Forward], Awaitable[Any]]


@attrs.define(eq=False)
class Router:
    """Takes one op to the leader and its result back (see module docstring).

    ``forward(replica, Forward)`` calls the peer; ``wait_change(timeout)``
    returns when the node's leader or role may have changed (or after
    ``timeout`` seconds).
    """

    node: RaftNode
    batcher: Batcher
    forward: ForwardFn
    wait_change: Callable[[float], Awaitable[None]]
    cell: str
    retry_delay: float = 0.01

    async def submit(self, op: list[Any], *, may_forward: bool = True) -> list[Any]:
        """The op's result (a result array); see the module docstring for retries.

        With ``may_forward`` False (serving a forward), a replica that does
        not lead raises :class:`Refused` instead of forwarding again.
        """
        sessioned = op[0] != OpKind.COMMAND or op[1] != 0
        # An open-session op is safe to retry: a lost session only expires.
        while True:
            status = self.node.status()
            if status.role is Role.LEADER:
                try:
                    return await self.batcher.submit(op)
                except NodeStopped:
                    # The replica is going down (and this task with it): never answer
                    # "failed" for an op that may commit elsewhere. The client sees
                    # the connection close and resends to the next leader.
                    await trio.sleep_forever()
                except NotLeader:
                    continue
                except ProposalDropped:
                    await self.wait_change(self.retry_delay)
                    continue
                except ProposalOutcomeUnknown as exc:
                    if sessioned:
                        continue
                    raise OutcomeUnknown(self.cell, f"the leader lost the command: {exc}") from exc
            leader = status.leader
            if not may_forward:
                raise Refused(None if leader is None else replica_id(leader))
            if leader is None or leader == status.id:
                await self.wait_change(self.retry_delay * 10)
                continue
            try:
                reply = await self.forward(replica_id(leader), Forward(op=cbor2.dumps(op)))
            except CellUnavailable as exc:
                if not sessioned:
                    raise OutcomeUnknown(
                        self.cell, f"the leader (replica {replica_id(leader)}) went away: {exc}"
                    ) from exc
                await self.wait_change(self.retry_delay)
                continue
            if isinstance(reply, ForwardRefused):
                await self.wait_change(self.retry_delay)
                continue
            if isinstance(reply, Forwarded):
                value = cbor2.loads(reply.result)
                if type(value) is list and value and type(value[0]) is int:
                    return value
            raise CellmeshError(
                f"replica {replica_id(leader)} answered a forward with {type(reply).__name__}"
            )


__all__ = ["BatchStats", "Batcher", "ReadBarrier", "Refused", "Router", "settle"]

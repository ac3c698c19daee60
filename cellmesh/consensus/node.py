"""The Trio driver of one Raft node: ticks, messages and clients in; persist, send, apply out.

Theory of operation
-------------------
:class:`RaftNode` wraps a pure :class:`~cellmesh.consensus.core.RaftCore`
and owns three tasks in one nursery (opened by :func:`open_raft_node`):

* the **ticker** calls ``core.tick()`` every ``tick_interval`` seconds of the
  Trio clock (so ``MockClock`` drives elections in tests);
* the **receiver** feeds every message from the :class:`Transport` to
  ``core.step()``;
* the **ready loop** is the thin loop of the etcd driver::

      rd = core.ready()
      leader: transport.send(APPEND / HEARTBEAT)                  # 0. see below
      await storage.save(rd.snapshot, rd.entries, rd.hard_state)  # 1. durable
      transport.send(m) for the other messages                    # 2. only after 1
      state_machine.restore / apply committed entries             # 3.
      wake readers whose read index is applied                    # 4.
      core.advance(rd)                                            # 5.

  Step 0 is the leader's disk write in parallel with replication
  (dissertation 10.2.1): unless the Ready changes the term or vote, the
  leader's appends and heartbeats leave before its own save, so its fsync
  overlaps the followers' round trip. It stays safe because ``ready()`` is
  not called again until the save returns: a commit the core computes from
  acknowledgements that arrive meanwhile (counting the leader's unsynced
  entry) is applied, answered or sent only in a later Ready, when the entry
  is durable here too; the ``commit`` in a step-0 message predates this
  Ready, so it covers only entries of earlier, already durable Readys.
  Everything else -- votes, a new term, a follower's acknowledgement --
  still waits for the fsync (:meth:`RaftNode._handle_ready`).

  Saves go through a :class:`SyncRunner`: a worker thread by default
  (:func:`run_in_thread`; clients and peers keep stepping the core while
  the fsync runs) or the event loop itself (:func:`run_inline`; cheaper on
  a small machine, and input then waits in the kernel meanwhile). Either
  way the next ``Ready`` carries everything that arrived during a save:
  group commit falls out of the loop with one fsync per batch. Before it
  takes a Ready (and before a save) the loop yields while other tasks are
  runnable, a bounded number of times, so input that has already arrived
  is stepped first and queued sends are flushed. A Ready whose only durable
  change is a higher commit index is not fsynced on its own (the commit
  index is a restart hint); it rides along with the next save, so
  heartbeats cost no fsyncs.

Clients call :meth:`RaftNode.propose` (returns the state machine's result
once the entry is applied here; at most ``max_pending_proposals`` are in
flight, further proposers wait) or :meth:`RaftNode.propose_nowait` (the
same, reported through a callback from the node's loop, for servers that
should not spend a task per request), :meth:`RaftNode.read` (linearizable via
ReadIndex, dissertation section 6.4: the query runs once the state machine
has applied the read index the leader confirmed),
:meth:`RaftNode.change_membership` and :meth:`RaftNode.transfer_leadership`.
With ``snapshot_every`` set, the loop snapshots the state machine and
compacts the log (section 7) after that many applied entries.

A storage failure (:class:`~cellmesh.consensus.wal.WalFailed`) or a state
machine that raises ends the node: the error propagates out of
``open_raft_node`` and every waiting client gets :class:`NodeStopped`.
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final, Protocol, TypeVar

import attrs
import trio

from cellmesh.consensus.core import RaftConfig, RaftCore, RandomSource, Ready
from cellmesh.consensus.errors import ConsensusError, ProposalDropped
from cellmesh.consensus.messages import Message, MessageType
from cellmesh.consensus.transport import Transport
from cellmesh.consensus.types import EntryKind, HardState, Membership, Role, SoftState
from cellmesh.consensus.wal import Recovered, WalBatch, WriteAheadLog

_READ_RETRY_ELECTIONS: Final = 2
#: Leader messages that may be sent while the leader's own save is in flight
#: (dissertation 10.2.1); see :meth:`RaftNode._handle_ready`.
_EARLY: Final = frozenset({MessageType.APPEND, MessageType.HEARTBEAT})
#: How many scheduling rounds the ready loop yields, at most, for input to settle.
_SETTLE_ROUNDS: Final = 8
_T = TypeVar("_T")


class NodeStopped(ConsensusError):
    """The node stopped (closed, or crashed on a storage or state machine failure).

    The outcome of a proposal that was waiting is unknown: it may still be
    committed by the rest of the cluster.
    """


class ProposalOutcomeUnknown(ConsensusError):
    """This node replaced its log with a snapshot covering the proposal's index.

    The proposal may or may not be part of that snapshot; ``index`` is where
    it was appended. Retry only if the command is idempotent.
    """

    def __init__(self, index: int) -> None:
        super().__init__(f"proposal at index {index} was covered by a snapshot; outcome unknown")
        self.index = index


class StateMachine(Protocol):
    """The replicated service. Must be deterministic and must not raise.

    Called only from the node's Trio thread, in log order.
    """

    def apply(self, command: bytes) -> bytes:
        """Apply one committed command; return the result for its proposer."""
        ...

    def query(self, query: bytes) -> bytes:
        """Answer a read-only query against the current state."""
        ...

    def snapshot(self) -> bytes:
        """Serialize the whole state (taken at the last applied entry)."""
        ...

    def restore(self, data: bytes) -> None:
        """Replace the whole state by a :meth:`snapshot` result."""


class IndexedStateMachine(StateMachine, Protocol):
    """A :class:`StateMachine` that also wants each command's log index.

    When the machine has ``apply_entry``, the node calls it instead of
    ``apply`` (a replicated cell hands the index to its user's ``apply``).
    """

    def apply_entry(self, index: int, command: bytes) -> bytes:
        """Apply the committed command at log ``index``; return the proposer's result."""
        ...


ProposalCallback = Callable[[bytes | None, BaseException | None], None]
"""``on_done(result, error)`` for :meth:`RaftNode.propose_nowait`: exactly one is not None."""


class LogStorage(Protocol):
    """Durable storage for the node; :class:`WriteAheadLog` is the real one."""

    def save(self, batch: WalBatch) -> None:
        """Make ``batch`` durable before returning (called from a worker thread)."""

    def close(self) -> None:
        """Release the storage."""


OpenStorage = Callable[[Path], tuple[LogStorage, Recovered]]


class SyncRunner(Protocol):
    """How the node runs blocking storage calls (open, save) from Trio."""

    def __call__(self, fn: Callable[[], _T], /) -> Awaitable[_T]:
        """Run ``fn`` to completion and return its result."""
        ...


async def _settle() -> None:
    """Yield while other tasks are runnable (a bounded number of times).

    The ready loop calls this before it takes a Ready, so that every message
    and proposal that has already arrived is stepped first (one batch, one
    save, however the tasks were scheduled), and before a save, so that
    sender tasks flush what the loop queued.
    """
    for _ in range(_SETTLE_ROUNDS):
        if trio.lowlevel.current_statistics().tasks_runnable == 0:
            return
        await trio.lowlevel.checkpoint()


async def run_in_thread(fn: Callable[[], _T]) -> _T:
    """The default :class:`SyncRunner`: a worker thread, so the node keeps
    stepping (and gathering the next batch) while an fsync runs. Not
    abandoned on cancellation: a save in flight always completes."""
    return await trio.to_thread.run_sync(fn)


async def run_inline(fn: Callable[[], _T]) -> _T:
    """A :class:`SyncRunner` that blocks the event loop.

    For tests under ``MockClock(autojump_threshold=0)``: with a thread, virtual
    time would leap forward whenever every task waits for an fsync.
    """
    return fn()


def open_wal_storage(directory: Path) -> tuple[LogStorage, Recovered]:
    """The default :data:`OpenStorage`: a :class:`WriteAheadLog` in ``directory``."""
    return WriteAheadLog.open(directory)


@attrs.frozen(kw_only=True)
class NodeOptions:
    """Driver parameters.

    ``tick_interval``: seconds per ``core.tick()``. ``max_pending_proposals``:
    proposals admitted to the log but not yet applied; more proposers wait.
    ``snapshot_every``: take a local snapshot (and compact the log) after this
    many applied entries; ``None`` never does.
    """

    tick_interval: float = 0.05
    max_pending_proposals: int = 256
    snapshot_every: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.tick_interval <= 0 or self.max_pending_proposals < 1:
            raise ValueError("need tick_interval > 0 and max_pending_proposals >= 1")
        if self.snapshot_every is not None and self.snapshot_every < 1:
            raise ValueError("snapshot_every must be positive or None")


@attrs.frozen(kw_only=True)
class NodeStatus:
    """A point-in-time view of a node, for tests and monitoring."""

    id: int
    role: Role
    leader: int | None
    term: int
    last_index: int
    commit: int
    applied: int
    pending_proposals: int
    saves: int


@attrs.define(eq=False)
class _Waiter:
    """One client waiting for the driver; the driver fills ``result`` or ``error``."""

    term: int = 0
    index: int | None = None
    result: bytes | None = None
    error: BaseException | None = None
    event: trio.Event = attrs.Factory(trio.Event)
    callback: Callable[[_Waiter], None] | None = None

    def resolve(self, result: bytes | None = None, error: BaseException | None = None) -> None:
        if not self.event.is_set():
            self.result = result
            self.error = error
            self.event.set()
            if self.callback is not None:
                self.callback(self)

    def outcome(self) -> bytes:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


@attrs.define(eq=False)
class RaftNode:
    """One running Raft node; create with :func:`open_raft_node`."""

    _core: RaftCore
    _storage: LogStorage
    _transport: Transport
    _machine: StateMachine
    _options: NodeOptions
    _applied: int
    _snapshot_index: int
    _admission: trio.Semaphore
    _run_sync: SyncRunner
    _dirty: trio.Event = attrs.Factory(trio.Event)
    _progress: trio.Event = attrs.Factory(trio.Event)
    _proposals: dict[int, _Waiter] = attrs.Factory(dict)
    _reads: dict[bytes, _Waiter] = attrs.Factory(dict)
    _read_ids: itertools.count[int] = attrs.Factory(itertools.count)
    _stopped: BaseException | None = None
    _saves: int = 0
    _durable_hard: HardState = attrs.Factory(HardState)
    _unsaved_hard: HardState | None = None
    _apply_at: Callable[[int, bytes], bytes] = attrs.field(init=False)
    _changed: trio.Event = attrs.Factory(trio.Event)

    def __attrs_post_init__(self) -> None:
        machine = self._machine
        apply_entry = getattr(machine, "apply_entry", None)
        self._apply_at = (
            apply_entry if callable(apply_entry) else lambda _, data: machine.apply(data)
        )

    # ---------------------------------------------------------------- clients

    @property
    def id(self) -> int:
        """This node's id."""
        return self._core.id

    def status(self) -> NodeStatus:
        """The node's current role, leader, term and progress counters."""
        core = self._core
        return NodeStatus(
            id=core.id,
            role=core.role,
            leader=core.lead,
            term=core.term,
            last_index=core.log.last_index,
            commit=core.log.committed,
            applied=self._applied,
            pending_proposals=len(self._proposals),
            saves=self._saves,
        )

    async def propose(self, command: bytes) -> bytes:
        """Replicate ``command``; return the state machine's result once applied here.

        Raises :class:`~cellmesh.consensus.errors.NotLeader` (with
        ``leader_hint``) unless this node leads, and
        :class:`~cellmesh.consensus.errors.ProposalDropped` if a new leader
        overwrote the entry (it was then certainly not committed). Waits while
        ``max_pending_proposals`` are in flight. If the caller is cancelled
        the command may still be committed.
        """
        return await self._replicate(lambda: self._core.propose(command))

    def propose_nowait(self, command: bytes, on_done: ProposalCallback) -> None:
        """Like :meth:`propose`, without a task waiting: ``on_done`` gets the outcome.

        ``on_done(result, None)`` once the entry is applied here, or
        ``on_done(None, error)`` with the error :meth:`propose` would raise
        later (:class:`~cellmesh.consensus.errors.ProposalDropped`,
        :class:`ProposalOutcomeUnknown`, :class:`NodeStopped`). It is called
        from the node's loop, exactly once, and must neither raise nor block.
        Raises ``trio.WouldBlock`` while ``max_pending_proposals`` are in
        flight (nothing was proposed: use :meth:`propose` to wait), and
        :class:`~cellmesh.consensus.errors.NotLeader` /
        :class:`~cellmesh.consensus.errors.ProposalDropped` at once, as
        :meth:`propose` does.
        """
        self._check_running()
        self._admission.acquire_nowait()
        try:
            index = self._core.propose(command)
        except BaseException:
            self._admission.release()
            raise

        def finished(waiter: _Waiter) -> None:
            self._admission.release()
            on_done(waiter.result, waiter.error)

        self._admit(_Waiter(term=self._core.term, index=index, callback=finished))

    def _admit(self, waiter: _Waiter) -> None:
        """Register ``waiter`` for its index and wake the loop."""
        assert waiter.index is not None
        stale = self._proposals.get(waiter.index)
        if stale is not None:  # defensive: an index is only reused after its entry was replaced
            stale.resolve(error=ProposalDropped("overwritten by a newer leader"))
        self._proposals[waiter.index] = waiter
        self._kick()

    async def _replicate(self, append: Callable[[], int]) -> bytes:
        """Admit one proposal (``append`` puts it in the log); wait until it is applied."""
        self._check_running()
        try:
            self._admission.acquire_nowait()  # no checkpoint on the fast path
        except trio.WouldBlock:
            await self._admission.acquire()
        try:
            self._check_running()
            index = append()
            waiter = _Waiter(term=self._core.term, index=index)
            self._admit(waiter)
            try:
                await waiter.event.wait()
            finally:
                if self._proposals.get(index) is waiter:
                    del self._proposals[index]
            return waiter.outcome()
        finally:
            self._admission.release()

    async def change_membership(self, membership: Membership) -> None:
        """Replicate a single-server membership change; return once it is applied here.

        The change takes effect on each node when appended (dissertation 4.1).
        Raises :class:`~cellmesh.consensus.errors.NotLeader`,
        :class:`~cellmesh.consensus.errors.ConfigChangeInProgress`,
        :class:`~cellmesh.consensus.errors.InvalidConfigChange` (from the core)
        or :class:`~cellmesh.consensus.errors.ProposalDropped`.
        """
        await self._replicate(lambda: self._core.propose_membership(membership))

    def transfer_leadership(self, target: int) -> None:
        """Ask the leader to hand leadership to voter ``target`` (dissertation 3.10).

        Returns at once; watch :meth:`status` or :meth:`wait_leader`. Proposals
        raise :class:`~cellmesh.consensus.errors.ProposalDropped` meanwhile.
        """
        self._check_running()
        self._core.transfer_leadership(target)
        self._kick()

    async def read(self, query: bytes) -> bytes:
        """Answer ``query`` linearizably (ReadIndex, dissertation section 6.4).

        Works on any node: a follower asks the leader for the read index.
        Raises :class:`~cellmesh.consensus.errors.NotLeader` if no leader is
        known. The request is re-sent every two election timeouts until the
        leader answers (a request can be lost when leadership changes).
        """
        self._check_running()
        context = f"{self._core.id}:{next(self._read_ids)}".encode()
        waiter = _Waiter()
        self._reads[context] = waiter
        retry = self._options.tick_interval * self._core.config.election_tick
        try:
            while True:
                self._core.read_index(context)
                self._kick()
                with trio.move_on_after(retry * _READ_RETRY_ELECTIONS):
                    await waiter.event.wait()
                if waiter.event.is_set():
                    break
                self._check_running()
        finally:
            del self._reads[context]
        if waiter.error is not None:
            raise waiter.error
        assert waiter.index is not None
        await self.wait_applied(waiter.index)
        return self._machine.query(query)

    async def wait_applied(self, index: int) -> None:
        """Return once the state machine here has applied ``index``."""
        while self._applied < index:
            self._check_running()
            await self._progress.wait()

    async def wait_changed(self) -> None:
        """Return once the node's role, leader, term or configuration may have changed
        (read :meth:`status`): after a Ready that changed the soft state, appended or
        committed a configuration entry, or installed a snapshot; or when it stops."""
        self._check_running()
        await self._changed.wait()

    async def wait_leader(self) -> int:
        """Return the id of the leader once this node knows one."""
        while self._core.lead is None:
            self._check_running()
            await self._progress.wait()
        return self._core.lead

    def _check_running(self) -> None:
        if self._stopped is not None:
            raise NodeStopped(f"node {self._core.id} stopped") from self._stopped

    # ---------------------------------------------------------------- driver

    def _kick(self) -> None:
        self._dirty.set()

    def _notify(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    async def _tick_loop(self) -> None:
        while True:
            await trio.sleep(self._options.tick_interval)
            self._core.tick()
            self._kick()

    async def _receive_loop(self) -> None:
        while True:
            message = await self._transport.receive()
            self._core.step(message)
            self._kick()

    async def _ready_loop(self) -> None:
        """The driver loop; see the module docstring for the ordering duties."""
        while True:
            await self._dirty.wait()
            self._dirty = trio.Event()
            await _settle()
            while self._core.has_ready():
                rd = self._core.ready()
                await self._handle_ready(rd)
                self._core.advance(rd)
                await self._maybe_snapshot()
                self._notify()
                await _settle()

    async def _persist(self, rd: Ready) -> None:
        """Step 1: make ``rd`` durable -- skipping a save that would only move ``commit``.

        The commit index in the hard state is a restart hint (safety never
        depends on it), so a Ready whose only durable change is a higher
        commit is not fsynced on its own; that hard state rides along with
        the next save. Term, vote, entries and snapshots are always durable
        before this returns.
        """
        hard = rd.hard_state
        if hard is not None:
            self._unsaved_hard = hard
        durable = self._durable_hard
        hard_changed = hard is not None and (hard.term, hard.vote) != (durable.term, durable.vote)
        if not (rd.entries or rd.snapshot is not None or hard_changed):
            return
        batch = WalBatch(snapshot=rd.snapshot, hard_state=self._unsaved_hard, entries=rd.entries)
        await self._run_sync(functools.partial(self._storage.save, batch))
        self._saves += 1
        if batch.hard_state is not None:
            self._durable_hard = batch.hard_state
        if self._unsaved_hard is batch.hard_state:
            self._unsaved_hard = None

    def _sendable_before_persist(self, rd: Ready) -> bool:
        """Whether this Ready's leader messages may leave before its save returns.

        True unless the Ready changes the term or vote (or installs a
        snapshot): then every message waits for the fsync.
        """
        hard = rd.hard_state
        durable = self._durable_hard
        return rd.snapshot is None and (
            hard is None or (hard.term, hard.vote) == (durable.term, durable.vote)
        )

    async def _handle_ready(self, rd: Ready) -> None:
        """Steps 1-4 for one Ready; the leader's appends overlap its own save.

        Dissertation 10.2.1: the leader may write its log in parallel with
        replicating it, provided its own entry counts toward a majority only
        once durable. Here APPEND and HEARTBEAT leave before the save unless
        the Ready changes the term or vote (whose durability every message
        relies on). Nothing this reveals is unsafe: the entries are the
        leader's own, the term is already durable, and the ``commit`` a
        message carries was computed before this Ready was taken, when every
        earlier Ready was already durable here -- the entries of this Ready
        cannot have been acknowledged yet, since they had not been sent. A
        commit the core counts with the unsynced entry (acks stepped during
        the save) is only revealed by a later Ready: ``ready()`` is not
        called again until this save returns, so nothing is applied, answered
        or sent on its strength before the entry is durable here. Followers
        still persist before they acknowledge (their APPEND_RESP is never
        sent early), and a vote or term change is never revealed before its
        fsync.
        """
        late: list[Message] | tuple[Message, ...] = rd.messages
        if self._sendable_before_persist(rd):
            late = []
            for message in rd.messages:
                if message.type in _EARLY:
                    self._transport.send(message)
                else:
                    late.append(message)
            if len(late) != len(rd.messages) and rd.must_sync:
                await _settle()  # let the transport flush before a save that may block the loop
        await self._persist(rd)
        for message in late:
            self._transport.send(message)
        if rd.snapshot is not None:
            self._install(rd.snapshot.meta.index, rd.snapshot.data)
        for entry in rd.committed_entries:
            result = (
                self._apply_at(entry.index, entry.data) if entry.kind is EntryKind.NORMAL else b""
            )
            waiter = self._proposals.pop(entry.index, None)
            if waiter is not None:
                if waiter.term == entry.term:
                    waiter.resolve(result)
                else:
                    waiter.resolve(error=ProposalDropped("overwritten by a newer leader"))
            self._applied = entry.index
        for state in rd.read_states:
            reader = self._reads.get(state.context)
            if reader is not None:
                reader.index = state.index
                reader.resolve(b"")
        if (
            rd.soft_state is not None
            or rd.snapshot is not None
            or any(e.kind is EntryKind.CONFIG for e in rd.entries)
            or any(e.kind is EntryKind.CONFIG for e in rd.committed_entries)
        ):
            self._changed.set()
            self._changed = trio.Event()
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state)

    def _install(self, index: int, data: bytes) -> None:
        self._machine.restore(data)
        self._applied = max(self._applied, index)
        self._snapshot_index = index
        for covered in [i for i in self._proposals if i <= index]:
            self._proposals.pop(covered).resolve(error=ProposalOutcomeUnknown(covered))

    def _on_soft_state(self, soft: SoftState) -> None:
        """Leadership changed; nothing to fail: waiters resolve when their index applies."""
        del soft

    async def _maybe_snapshot(self) -> None:
        every = self._options.snapshot_every
        if every is None or self._applied - self._snapshot_index < every:
            return
        snapshot = self._core.compact(self._applied, self._machine.snapshot())
        await self._run_sync(functools.partial(self._storage.save, WalBatch(snapshot=snapshot)))
        self._saves += 1
        self._snapshot_index = snapshot.meta.index

    async def _run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._ready_loop)
                nursery.start_soon(self._receive_loop)
                nursery.start_soon(self._tick_loop)
                self._kick()
                task_status.started()
        except BaseException as exc:
            self._stop(exc)
            raise

    def _stop(self, cause: BaseException) -> None:
        self._stopped = cause
        self._changed.set()
        for waiter in [*self._proposals.values(), *self._reads.values()]:
            stopped = NodeStopped(f"node {self._core.id} stopped")
            stopped.__cause__ = cause
            waiter.resolve(error=stopped)
        self._notify()


@asynccontextmanager
async def open_raft_node(
    config: RaftConfig,
    *,
    voters: Iterable[int],
    directory: Path,
    transport: Transport,
    state_machine: StateMachine,
    options: NodeOptions | None = None,
    rng: RandomSource | None = None,
    open_storage: OpenStorage = open_wal_storage,
    run_sync: SyncRunner = run_in_thread,
) -> AsyncIterator[RaftNode]:
    """Recover a node from ``directory`` and run it until the block exits.

    ``voters`` is the bootstrap membership of a brand-new cluster (ignored
    once the log holds a snapshot). The state machine is restored from the
    recovered snapshot; committed entries after it are re-applied by the
    loop. ``run_sync`` runs the blocking storage calls (default: a worker
    thread). On exit the node's tasks are cancelled and the storage closed.
    """
    opts = options if options is not None else NodeOptions()
    storage, recovered = await run_sync(functools.partial(open_storage, directory))
    try:
        core = RaftCore(
            config,
            rng if rng is not None else random.Random(),
            voters=voters,
            hard_state=recovered.hard_state,
            snapshot=recovered.snapshot,
            entries=recovered.entries,
        )
        base = 0
        if recovered.snapshot is not None:
            state_machine.restore(recovered.snapshot.data)
            base = recovered.snapshot.meta.index
        node = RaftNode(
            core=core,
            storage=storage,
            transport=transport,
            machine=state_machine,
            options=opts,
            applied=base,
            durable_hard=recovered.hard_state,
            snapshot_index=base,
            admission=trio.Semaphore(opts.max_pending_proposals),
            run_sync=run_sync,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(node._run)
            try:
                yield node
            finally:
                nursery.cancel_scope.cancel()
        node._stop(NodeStopped("closed"))
    finally:
        storage.close()


__all__ = [
    "IndexedStateMachine",
    "LogStorage",
    "NodeOptions",
    "NodeStatus",
    "NodeStopped",
    "OpenStorage",
    "ProposalCallback",
    "ProposalOutcomeUnknown",
    "RaftNode",
    "StateMachine",
    "SyncRunner",
    "open_raft_node",
    "open_wal_storage",
    "run_in_thread",
    "run_inline",
]

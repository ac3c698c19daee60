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
:meth:`RaftNode.add_server` / :meth:`RaftNode.remove_server` (one
single-server change at a time; a new server joins as a learner and is
promoted once caught up, dissertation 4.2.1), the lower-level
:meth:`RaftNode.change_membership`, and :meth:`RaftNode.transfer_leadership`.
With ``snapshot_every`` set, the loop snapshots the state machine and
compacts the log (section 7) after that many applied entries.

A proposal ends in exactly one of three ways (docs/consensus.md, "Proposal
outcomes"): the state machine's result (applied here); ``ProposalDropped``
(definitely not applied: refused before it was appended, or another entry
was committed at its index); or ``ProposalOutcomeUnknown`` (appended, but
this node lost leadership before it committed, replaced its log with a
snapshot around it, or stopped: it may or may not be applied).

A storage failure (:class:`~cellmesh.consensus.wal.WalFailed`) or a state
machine that raises ends the node: the error propagates out of
``open_raft_node``; waiting proposers get ``ProposalOutcomeUnknown`` and
every other waiting caller :class:`NodeStopped`.
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final, TypeVar

import attrs
import trio

from cellmesh._util import settle
from cellmesh.consensus._driver import (
    IndexedStateMachine,
    LogStorage,
    NodeOptions,
    NodeStatus,
    NodeStopped,
    OpenStorage,
    ProposalCallback,
    StateMachine,
    SyncRunner,
    Waiter,
    open_wal_storage,
    run_in_thread,
    run_in_thread_abandoning,
    run_inline,
)
from cellmesh.consensus._snapshots import SnapshotBuilds
from cellmesh.consensus.catchup import CatchUp, Verdict
from cellmesh.consensus.core import RaftConfig, RaftCore, RandomSource, Ready
from cellmesh.consensus.errors import (
    CatchUpFailed,
    ConfigChangeInProgress,
    ProposalDropped,
    ProposalOutcomeUnknown,
    RestoredLogInvalid,
)
from cellmesh.consensus.messages import Message, MessageType
from cellmesh.consensus.transport import Transport
from cellmesh.consensus.types import (
    EntryKind,
    HardState,
    Membership,
    PendingChange,
    Role,
    SoftState,
)
from cellmesh.consensus.wal import TornTail, WalBatch, WalCorrupted, prepare_directory

_READ_RETRY_ELECTIONS: Final = 2
#: Leader messages that may be sent while the leader's own save is in flight
#: (dissertation 10.2.1); see :meth:`RaftNode._handle_ready`.
_EARLY: Final = frozenset({MessageType.APPEND, MessageType.HEARTBEAT})
#: How many scheduling rounds the ready loop yields, at most, for input to settle.
_SETTLE_ROUNDS: Final = 8
_T = TypeVar("_T")


async def _settle() -> None:
    """Before a Ready (and before a save): every message and proposal that has
    already arrived is stepped first (one batch, one save), and sender tasks
    flush what the loop queued."""
    await settle(_SETTLE_ROUNDS)


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
    _proposals: dict[int, Waiter] = attrs.Factory(dict)
    _reads: dict[bytes, Waiter] = attrs.Factory(dict)
    _read_ids: itertools.count[int] = attrs.Factory(itertools.count)
    _stopped: BaseException | None = None
    _saves: int = 0
    _durable_hard: HardState = attrs.Factory(HardState)
    _unsaved_hard: HardState | None = None
    _ticked: trio.Event = attrs.Factory(trio.Event)
    _change: PendingChange | None = None
    _changed: trio.Event = attrs.Factory(trio.Event)
    #: What recovery cut off the log when the node opened (None: nothing).
    torn_tail: TornTail | None = None
    _apply_at: Callable[[int, bytes], bytes] = attrs.field(init=False)
    _builds: SnapshotBuilds = attrs.field(init=False)
    _nursery: trio.Nursery | None = None

    def __attrs_post_init__(self) -> None:
        machine = self._machine
        apply_entry = getattr(machine, "apply_entry", None)
        self._apply_at = (
            apply_entry if callable(apply_entry) else lambda _, data: machine.apply(data)
        )
        builds_run = (run_in_thread_abandoning if self._run_sync is run_in_thread
                      else self._run_sync)  # a stopping node does not wait for a build
        self._builds = SnapshotBuilds(run_sync=builds_run, wake=self._kick)

    # ---------------------------------------------------------------- clients

    @property
    def id(self) -> int:
        """This node's id."""
        return self._core.id

    def match_index(self, node: int) -> int | None:
        """The highest index this leader knows ``node`` holds (its match index, dissertation
        3.5); None when this node does not lead or does not track ``node``."""
        progress = self._core.progress(node)
        return None if progress is None else progress.match

    def heard_from(self, node: int) -> bool:
        """True if this leader had an answer from ``node`` within about an election timeout."""
        progress = self._core.progress(node)
        return progress is not None and progress.recent_active

    def status(self) -> NodeStatus:
        """The node's current role, leader, term and progress counters."""
        core = self._core
        config_index = core.log.last_config_index()
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
            voters=core.membership.voters,
            learners=core.membership.learners,
            config_index=config_index,
            config_committed=config_index <= core.log.committed,
            pending_change=self._change,
            joining=core.joining,
        )

    async def propose(self, command: bytes) -> bytes:
        """Replicate ``command``; return the state machine's result once applied here.

        Raises :class:`~cellmesh.consensus.errors.NotLeader` (with
        ``leader_hint``; :class:`~cellmesh.consensus.errors.NodeRemoved` on a
        removed node) unless this node leads, and
        :class:`~cellmesh.consensus.errors.ProposalDropped` when the command
        is certainly not applied (refused during a leadership transfer, or a
        different entry was committed at its index), and
        :class:`~cellmesh.consensus.errors.ProposalOutcomeUnknown` when it was
        appended but this node cannot tell any more whether it commits (it
        lost leadership first, a snapshot replaced its log, or it stopped).
        Waits while ``max_pending_proposals`` are in flight. If the caller is
        cancelled the command may still be committed.
        """
        return await self._replicate(lambda: self._core.propose(command))

    def propose_nowait(self, command: bytes, on_done: ProposalCallback) -> None:
        """Like :meth:`propose`, without a task waiting: ``on_done`` gets the outcome.

        ``on_done(result, None)`` once the entry is applied here, or
        ``on_done(None, error)`` with the error :meth:`propose` would raise
        later (:class:`~cellmesh.consensus.errors.ProposalDropped` or
        :class:`~cellmesh.consensus.errors.ProposalOutcomeUnknown`). It is called
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

        def finished(waiter: Waiter) -> None:
            self._admission.release()
            on_done(waiter.result, waiter.error)

        self._admit(Waiter(term=self._core.term, index=index, callback=finished))

    def _admit(self, waiter: Waiter) -> None:
        """Register ``waiter`` for its index and wake the loop."""
        assert waiter.index is not None
        stale = self._proposals.get(waiter.index)
        if stale is not None:
            # Defensive: waiters are settled when leadership is lost, so an index is
            # never reused while one waits. Its entry is gone from this log, but it
            # might still be committed elsewhere: the outcome is unknown.
            stale.resolve(error=ProposalOutcomeUnknown(waiter.index, "leadership changed"))
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
            waiter = Waiter(term=self._core.term, index=index)
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

        The low-level primitive under :meth:`add_server` / :meth:`remove_server`
        (prefer those: they add new servers as learners first). The change
        takes effect on each node when appended (dissertation 4.1).
        Raises :class:`~cellmesh.consensus.errors.NotLeader`,
        :class:`~cellmesh.consensus.errors.ConfigChangeInProgress`,
        :class:`~cellmesh.consensus.errors.InvalidConfigChange` (from the core),
        :class:`~cellmesh.consensus.errors.ProposalDropped` or
        :class:`~cellmesh.consensus.errors.ProposalOutcomeUnknown`.
        """
        await self._replicate(lambda: self._core.propose_membership(membership))

    async def add_server(self, node: int) -> None:
        """Make ``node`` a voter: as a learner first, promoted once caught up.

        Call it on the leader. Steps (dissertation 4.2.1), each one committed
        single-server change: add ``node`` as a learner (skipped if it is one
        already); replicate the log to it in rounds until a round takes at
        most one election timeout (:mod:`cellmesh.consensus.catchup`); then
        promote it to voter. Returns once the promotion is applied here;
        returns at once if ``node`` is already a voter. Safe to call again
        after a failure or a leader change: it resumes where the
        configuration stands.

        Raises :class:`~cellmesh.consensus.errors.ConfigChangeInProgress` if
        this node is already carrying out a change (or one is uncommitted),
        :class:`~cellmesh.consensus.errors.CatchUpFailed` if the learner does
        not catch up (it stays a learner), and what :meth:`change_membership`
        raises (``NotLeader`` if leadership moves meanwhile).
        """
        async with self._changing(PendingChange(kind="add", node=node, phase="adding learner")):
            config = self._core.membership
            if node in config.voters:
                return
            if node not in config.learners:
                await self.change_membership(
                    Membership(voters=config.voters, learners=config.learners | {node})
                )
            await self._catch_up(node)
            self._set_phase("promoting to voter")
            config = self._core.membership
            if node not in config.voters:
                await self.change_membership(
                    Membership(voters=config.voters | {node}, learners=config.learners - {node})
                )

    async def remove_server(self, node: int) -> None:
        """Remove ``node`` (voter or learner) from the configuration; return once applied.

        Call it on the leader; one single-server change (dissertation 4.1).
        The leader may remove itself: it leads until the change commits, then
        hands leadership over (dissertation 4.2.2). The removed server learns
        of its removal and becomes :attr:`Role.REMOVED`. Returns at once if
        ``node`` is not a member. Raises like :meth:`add_server` (without
        ``CatchUpFailed``).
        """
        async with self._changing(PendingChange(kind="remove", node=node, phase="removing")):
            config = self._core.membership
            if node not in config.members:
                return
            await self.change_membership(
                Membership(voters=config.voters - {node}, learners=config.learners - {node})
            )

    @asynccontextmanager
    async def _changing(self, change: PendingChange) -> AsyncIterator[None]:
        """Refuse a second concurrent change; show ``change`` in :meth:`status` meanwhile."""
        self._check_running()
        if self._change is not None:
            raise ConfigChangeInProgress(self._core.pending_config_index, self._change)
        if self._core.role is not Role.LEADER:
            raise self._core.not_leader()
        if self._core.pending_config_index:
            raise ConfigChangeInProgress(self._core.pending_config_index)
        self._change = change
        try:
            yield
        finally:
            self._change = None

    def _set_phase(self, phase: str) -> None:
        if self._change is not None:
            self._change = attrs.evolve(self._change, phase=phase)

    async def _catch_up(self, node: int) -> None:
        """Wait until learner ``node`` is caught up (see :mod:`cellmesh.consensus.catchup`)."""
        election = self._core.config.election_tick
        rounds = CatchUp(
            round_ticks=election,
            max_rounds=self._options.catch_up_rounds,
            stall_ticks=self._options.catch_up_stall_elections * election,
        )
        while True:
            self._check_running()
            progress = self._core.progress(node)
            if progress is None:
                raise self._core.not_leader()
            verdict = rounds.observe(progress.match, self._core.log.last_index)
            if verdict is Verdict.CAUGHT_UP:
                return
            if verdict is Verdict.FAILED:
                raise CatchUpFailed(node, rounds.problem)
            self._set_phase(
                f"catching up: round {rounds.round} of {rounds.max_rounds}, "
                f"{progress.match} of {rounds.target}"
            )
            await self._ticked.wait()

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
        waiter = Waiter()
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
            self._ticked.set()
            self._ticked = trio.Event()

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
            await self._maybe_snapshot()  # a background build may have finished
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
        if not (rd.entries or rd.snapshot is not None or hard_changed or rd.join is not None):
            return
        batch = WalBatch(
            snapshot=rd.snapshot,
            hard_state=self._unsaved_hard,
            entries=rd.entries,
            join=rd.join,
        )
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
                    waiter.resolve(
                        error=ProposalDropped(
                            f"another entry (term {entry.term}) was committed at index "
                            f"{entry.index}"
                        )
                    )
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
            self._proposals.pop(covered).resolve(
                error=ProposalOutcomeUnknown(covered, "a snapshot from the leader replaced the log")
            )

    def _on_soft_state(self, soft: SoftState) -> None:
        """Leadership lost: settle the proposals this node can no longer vouch for.

        A proposal whose entry is already committed (with its term) will be
        applied: it keeps waiting. Any other was appended by this node as
        leader and may or may not be committed by the next leader:
        :class:`ProposalOutcomeUnknown`, at once, so the caller can retry
        elsewhere (client sessions make a retry safe).
        """
        if soft.role is Role.LEADER or not self._proposals:
            return
        log = self._core.log
        for index, waiter in list(self._proposals.items()):
            if index <= log.committed and log.term(index) == waiter.term:
                continue
            del self._proposals[index]
            waiter.resolve(
                error=ProposalOutcomeUnknown(
                    index, f"node {self._core.id} lost leadership before it committed"
                )
            )

    async def _maybe_snapshot(self) -> None:
        """Between two Readys: save a finished background build; start one when due
        (:mod:`cellmesh.consensus._snapshots`), or take it inline."""
        built = self._builds.take()
        log = self._core.log
        if built is not None and log.snapshot.meta.index < built[0] <= log.applied:
            await self._save_snapshot(*built)  # else the leader's snapshot replaced that log
        every = self._options.snapshot_every
        if every is None or self._builds.busy or self._applied - self._snapshot_index < every:
            return
        job = getattr(self._machine, "snapshot_job", None)  # BackgroundSnapshots
        if callable(job) and self._nursery is not None:
            self._builds.start(self._nursery, self._applied, job())
        else:
            await self._save_snapshot(self._applied, self._machine.snapshot())

    async def _save_snapshot(self, index: int, data: bytes) -> None:
        snapshot = self._core.compact(index, data)
        await self._run_sync(functools.partial(self._storage.save, WalBatch(snapshot=snapshot)))
        self._saves += 1
        self._snapshot_index = snapshot.meta.index

    async def _run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
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
        for index, waiter in self._proposals.items():
            unknown = ProposalOutcomeUnknown(index, f"node {self._core.id} stopped")
            unknown.__cause__ = cause
            waiter.resolve(error=unknown)
        for waiter in self._reads.values():
            stopped = NodeStopped(f"node {self._core.id} stopped")
            stopped.__cause__ = cause
            waiter.resolve(error=stopped)
        self._notify()
        self._changed.set()
        self._ticked.set()


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
    join: bool = False,
) -> AsyncIterator[RaftNode]:
    """Recover a node from ``directory`` and run it until the block exits.

    ``voters`` is the bootstrap membership of a brand-new cluster (ignored
    once the log holds a snapshot). The state machine is restored from the
    recovered snapshot; committed entries after it are re-applied by the
    loop. ``run_sync`` runs the blocking storage calls (default: a worker
    thread). On exit the node's tasks are cancelled and the storage closed.

    ``directory`` is claimed for node ``config.id`` first
    (:func:`~cellmesh.consensus.wal.prepare_directory`): a new directory is
    marked as this node's (and as *joining* when ``join`` is true: a server
    added to a running cluster with ``add_server``, which must not take the
    bootstrap configuration nor vote before it is promoted); one that
    belongs to another node is refused (``WalWrongNode``); one whose state
    was lost is refused (``WalStateLost``, see
    :func:`~cellmesh.consensus.wal.wipe_replica`). ``join`` is ignored for a
    directory that already holds state.
    """
    opts = options if options is not None else NodeOptions()
    await run_sync(functools.partial(prepare_directory, directory, node=config.id, join=join))
    storage, recovered = await run_sync(functools.partial(open_storage, directory))
    try:
        try:
            core = RaftCore(
                config,
                rng if rng is not None else random.Random(),
                voters=voters,
                hard_state=recovered.hard_state,
                snapshot=recovered.snapshot,
                entries=recovered.entries,
                join=recovered.join,
            )
        except RestoredLogInvalid as exc:  # the storage kept what no node writes
            raise WalCorrupted(
                directory, 0, f"the recovered log is not a Raft log: {exc}"
            ) from None
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
            torn_tail=recovered.torn_tail,
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

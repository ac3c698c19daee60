"""The Trio driver's values and seams: options, status, the storage and state-machine protocols.

Theory of operation: :mod:`cellmesh.consensus.node` is the driver loop; what
a caller configures it with (:class:`NodeOptions`), observes
(:class:`NodeStatus`), and plugs into it (:class:`StateMachine`,
:class:`LogStorage`, :class:`SyncRunner`) lives here, so the loop module stays
about the loop. All names are re-exported by ``cellmesh.consensus.node`` and
the package.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol, TypeVar

import attrs
import trio

from cellmesh.consensus.errors import ConsensusError
from cellmesh.consensus.types import PendingChange, Role
from cellmesh.consensus.wal import Recovered, WalBatch, WriteAheadLog

_T = TypeVar("_T")


class NodeStopped(ConsensusError):
    """The node stopped (closed, or crashed on a storage or state machine failure).

    Raised by calls made after the stop and by reads that were waiting. A
    proposal that was waiting gets :class:`ProposalOutcomeUnknown` instead
    (its ``__cause__`` is the reason the node stopped): it may still be
    committed by the rest of the cluster.
    """


@attrs.define(eq=False)
class Waiter:
    """One client waiting for the driver; the driver fills ``result`` or ``error``."""

    term: int = 0
    index: int | None = None
    result: bytes | None = None
    error: BaseException | None = None
    event: trio.Event = attrs.Factory(trio.Event)
    callback: Callable[[Waiter], None] | None = None

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


ProposalCallback = Callable[[bytes | None, BaseException | None], None]
"""``on_done(result, error)`` for :meth:`RaftNode.propose_nowait`: exactly one is not None."""


class IndexedStateMachine(StateMachine, Protocol):
    """A :class:`StateMachine` that also wants each command's log index.

    When the machine has ``apply_entry``, the node calls it instead of
    ``apply`` (a replicated cell hands the index to its user's ``apply``).
    """

    def apply_entry(self, index: int, command: bytes) -> bytes:
        """Apply the committed command at log ``index``; return the proposer's result."""
        ...


class BackgroundSnapshots(StateMachine, Protocol):
    """A :class:`StateMachine` whose snapshot can be built off the event loop.

    When the machine has ``snapshot_job``, the node calls it (on its Trio
    thread, between applies) instead of ``snapshot`` and runs the function
    it returns in a worker thread while it goes on applying, sending and
    answering; the bytes are the snapshot at the index applied when
    ``snapshot_job`` was called. So ``snapshot_job`` must capture what the
    snapshot needs cheaply (copies of the containers ``apply`` changes,
    references to values it never changes), and the function must read
    nothing else. A large state's snapshot then costs the loop the capture,
    not the encoding.
    """

    def snapshot_job(self) -> Callable[[], bytes]:
        """Capture the state now; the returned function builds :meth:`snapshot`'s bytes."""
        ...


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


async def run_in_thread(fn: Callable[[], _T]) -> _T:
    """The default :class:`SyncRunner`: a worker thread, so the node keeps
    stepping (and gathering the next batch) while an fsync runs. Not
    abandoned on cancellation: a save in flight always completes."""
    return await trio.to_thread.run_sync(fn)


async def run_in_thread_abandoning(fn: Callable[[], _T]) -> _T:
    """:func:`run_in_thread` for pure computations (building a snapshot): on
    cancellation the caller returns at once and the thread's result is dropped,
    so a stopping node does not wait for it."""
    return await trio.to_thread.run_sync(fn, abandon_on_cancel=True)


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
    many applied entries; ``None`` never does. ``catch_up_rounds`` and
    ``catch_up_stall_elections``: how :meth:`RaftNode.add_server` decides a
    learner is caught up (:mod:`cellmesh.consensus.catchup`): at most this
    many replication rounds, and give up after this many election timeouts
    without progress.
    """

    tick_interval: float = 0.05
    max_pending_proposals: int = 256
    snapshot_every: int | None = None
    catch_up_rounds: int = 10
    catch_up_stall_elections: int = 10

    def __attrs_post_init__(self) -> None:
        if self.tick_interval <= 0 or self.max_pending_proposals < 1:
            raise ValueError("need tick_interval > 0 and max_pending_proposals >= 1")
        if self.snapshot_every is not None and self.snapshot_every < 1:
            raise ValueError("snapshot_every must be positive or None")
        if self.catch_up_rounds < 1 or self.catch_up_stall_elections < 1:
            raise ValueError("catch_up_rounds and catch_up_stall_elections must be positive")


@attrs.frozen(kw_only=True)
class NodeStatus:
    """A point-in-time view of a node, for drivers, status displays and tests.

    ``role`` is :attr:`Role.REMOVED` once the node knows a committed
    configuration without itself. ``voters``/``learners`` are the latest
    configuration in its log (in effect as soon as appended, dissertation
    4.1); ``config_index`` is the index of the CONFIG entry that set it (0:
    the bootstrap configuration) and ``config_committed`` whether it is
    committed. ``pending_change`` is a change this node's driver is carrying
    out (``add_server``/``remove_server``). ``joining``: the node joined with
    an empty log and was not promoted yet (it does not vote).
    """

    id: int
    role: Role
    leader: int | None
    term: int
    last_index: int
    commit: int
    applied: int
    pending_proposals: int
    saves: int
    voters: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()
    config_index: int = 0
    config_committed: bool = True
    pending_change: PendingChange | None = None
    joining: bool = False


__all__ = [
    "IndexedStateMachine",
    "LogStorage",
    "NodeOptions",
    "NodeStatus",
    "NodeStopped",
    "OpenStorage",
    "ProposalCallback",
    "StateMachine",
    "SyncRunner",
    "Waiter",
    "open_wal_storage",
    "run_in_thread",
    "run_in_thread_abandoning",
    "run_inline",
]

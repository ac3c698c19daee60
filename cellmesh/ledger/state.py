"""The ledger as a deterministic state machine: ``apply`` writes, ``query`` reads.

Theory of operation
-------------------
A replicated log calls :meth:`LedgerState.apply` with each committed command
and its :class:`EntryMeta` (the entry's log ``index`` and the leader-assigned
``timestamp`` in nanoseconds). Replicas that apply the same commands in the
same order hold the same state and answer the same replies: nothing here
reads a clock, draws a random number or iterates a set in an order that
could differ.

Time: the ledger's ``clock`` is the last timestamp it handed out. A command
with ``n`` events runs its events at ``base, base + 1, ... base + n - 1``
with ``base = max(meta.timestamp, clock + 1)``, so every event -- across
commands too -- has its own, strictly increasing timestamp even if the
leader's clock stands still or steps back. Pending transfers expire by this
clock: before a write's first event (and before every event outside a
linked chain) every transfer whose expiry is at or before the event's
timestamp is voided. :class:`~cellmesh.ledger.proteins.Pulse` does only
that; :meth:`LedgerState.next_expiry` tells a driver when one is due.

Writes never raise: each event gets a result code; a command refused as a
whole (too many events, not a ledger command, clock past 2**63) gets
:class:`~cellmesh.ledger.proteins.Rejected` and changes nothing but the
applied index. Reads never change anything and raise
:class:`~cellmesh.ledger.errors.InvalidQuery` for a malformed request.

Preconditions: commands are well-typed proteins (every field an ``int``
where the class says so), as decoding from the wire guarantees.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import attrs

from . import queries, snapshot
from ._accounts import account_engine
from ._batch import Bulk, OneEvent, run_batch
from ._store import Store, expire_due
from ._transfers import transfer_engine
from .codes import (
    BATCH_MAX,
    NS_PER_SECOND,
    TIMESTAMP_LIMIT,
    TRANSIENT_FAILURES,
    AccountResult,
    FilterFlags,
    PendingStatus,
    TransferResult,
)
from .errors import InvalidQuery
from .proteins import (
    Account,
    AccountsReply,
    BooksReport,
    CheckBooks,
    CreateAccounts,
    CreateAccountsReply,
    CreateTransfers,
    CreateTransfersReply,
    GetAccountTransfers,
    GetTotals,
    LedgerTotals,
    LookupAccounts,
    LookupPending,
    LookupTransfers,
    PendingReply,
    Pulse,
    PulseReply,
    QueryReply,
    Rejected,
    Reply,
    TotalsReply,
    Transfer,
    TransfersReply,
)

_TRANSIENT = frozenset(int(code) for code in TRANSIENT_FAILURES)


class EntryMeta(Protocol):
    """What the replicated log tells ``apply`` about the entry being applied."""

    @property
    def index(self) -> int:
        """The entry's log index (increases from one apply to the next)."""
        ...

    @property
    def timestamp(self) -> int:
        """Leader-assigned time of the entry, integer nanoseconds below 2**63."""
        ...


@attrs.frozen(kw_only=True)
class ApplyMeta:
    """A plain :class:`EntryMeta` (for callers that drive the ledger themselves)."""

    index: int
    timestamp: int


@attrs.define(eq=False)
class LedgerState:
    """One ledger's whole state; see the module doc for the contract."""

    _store: Store = attrs.field(factory=Store, init=False, repr=False)
    _accounts: OneEvent = attrs.field(init=False, repr=False)
    _transfers: OneEvent = attrs.field(init=False, repr=False)
    _bulk: Bulk = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._bind(self._store)

    def _bind(self, store: Store) -> None:
        self._store = store
        self._accounts = account_engine(store)
        self._transfers, self._bulk = transfer_engine(store)

    # -- writes ---------------------------------------------------------------

    def apply(self, command: object, meta: EntryMeta) -> Reply:
        """Apply one committed command; return its reply (never raises for a protein).

        ``meta.index`` is recorded as :attr:`applied_index`; ``meta.timestamp``
        drives the clock (module doc).
        """
        store = self._store
        store.applied_index = max(store.applied_index, meta.index)
        if isinstance(command, CreateTransfers | CreateAccounts):
            events = command.events
            if len(events) > BATCH_MAX:
                return Rejected(reason="too_many_events",
                                detail=f"{len(events)} events, at most {BATCH_MAX} per command")
            base = self._advance(meta.timestamp, len(events))
            if base is None:
                return _clock_exhausted()
            expire_due(store, base)
            if isinstance(command, CreateTransfers):
                results = run_batch(store, events, base, self._transfers,
                                    exists=TransferResult.EXISTS, transient=_TRANSIENT,
                                    expire=True, bulk=self._bulk)
                return CreateTransfersReply(results=results, timestamp=base)
            results = run_batch(store, events, base, self._accounts,
                                exists=AccountResult.EXISTS)
            return CreateAccountsReply(results=results, timestamp=base)
        if isinstance(command, Pulse):
            base = self._advance(meta.timestamp, 1)
            if base is None:
                return _clock_exhausted()
            return PulseReply(expired=expire_due(store, base))
        return Rejected(reason="unknown_command",
                        detail=f"{type(command).__qualname__} is not a ledger command")

    def _advance(self, timestamp: int, count: int) -> int | None:
        """Hand out ``count`` (at least one) timestamps; the first, or None if past 2**63."""
        store = self._store
        base = max(timestamp, store.clock + 1)
        last = base + max(count, 1) - 1
        if last >= TIMESTAMP_LIMIT:
            return None
        store.clock = last
        return base

    # -- reads ----------------------------------------------------------------

    @property
    def clock(self) -> int:
        """The last timestamp handed out (0 before the first command)."""
        return self._store.clock

    @property
    def applied_index(self) -> int:
        """The highest log index applied (0 before the first command)."""
        return self._store.applied_index

    def next_expiry(self) -> int | None:
        """When the earliest pending expiry falls due, or None if none is scheduled.

        It may name a transfer since resolved (a Pulse then expires nothing):
        early, never late.
        """
        heap = self._store.expiry
        return heap[0][0] if heap else None

    def pulse_due_in(self, now: int) -> float | None:
        """Seconds from ``now`` (nanoseconds) until a :class:`Pulse` would expire something.

        0.0 when one is due already; None when no pending transfer has a
        timeout. For the driver that proposes pulses: a pulse proposed once
        this is 0 carries a leader timestamp at or past the expiry.
        """
        due = self.next_expiry()
        if due is None:
            return None
        return max(due - now, 0) / NS_PER_SECOND

    def query(self, request: object) -> QueryReply:
        """Answer a read protein; never changes anything (InvalidQuery if malformed)."""
        store = self._store
        if isinstance(request, LookupAccounts):
            return AccountsReply(accounts=queries.lookup_accounts(store, request.ids))
        if isinstance(request, LookupTransfers):
            return TransfersReply(transfers=queries.lookup_transfers(store, request.ids))
        if isinstance(request, GetAccountTransfers):
            return TransfersReply(transfers=queries.account_transfers(
                store, request.account_id, timestamp_min=request.timestamp_min,
                timestamp_max=request.timestamp_max, limit=request.limit, flags=request.flags))
        if isinstance(request, LookupPending):
            return PendingReply(statuses=queries.pending_statuses(store, request.ids))
        if isinstance(request, GetTotals):
            return TotalsReply(ledgers=queries.totals(store), timestamp=store.clock,
                               applied_index=store.applied_index)
        if isinstance(request, CheckBooks):
            return queries.check_books(store, request.max_violations)
        raise InvalidQuery("query", f"{type(request).__qualname__} is not a ledger query")

    def lookup_accounts(self, ids: Sequence[int]) -> list[Account]:
        """The accounts with these ids as they are now, in order; unknown ids left out."""
        return queries.lookup_accounts(self._store, ids)

    def lookup_transfers(self, ids: Sequence[int]) -> list[Transfer]:
        """The transfers with these ids, in order; unknown ids left out."""
        return queries.lookup_transfers(self._store, ids)

    def get_account_transfers(
        self,
        account_id: int,
        *,
        timestamp_min: int = 0,
        timestamp_max: int = 0,
        limit: int = BATCH_MAX,
        flags: int = FilterFlags.DEBITS | FilterFlags.CREDITS,
    ) -> list[Transfer]:
        """A page of an account's transfers (:func:`~cellmesh.ledger.queries.account_transfers`)."""
        return queries.account_transfers(
            self._store, account_id, timestamp_min=timestamp_min,
            timestamp_max=timestamp_max, limit=limit, flags=flags)

    def pending_status(self, transfer_id: int) -> PendingStatus | None:
        """Where pending transfer ``transfer_id`` stands, or None if it is not one."""
        status = self._store.pending.get(transfer_id)
        return None if status is None else PendingStatus(status)

    def totals(self) -> list[LedgerTotals]:
        """Per-ledger sums of every balance column (each must balance)."""
        return queries.totals(self._store)

    def check_books(self, max_violations: int = 100) -> BooksReport:
        """Every invariant checked over the whole state (``queries.check_books``)."""
        return queries.check_books(self._store, max_violations)

    # -- snapshots --------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole state as canonical bytes (see :mod:`cellmesh.ledger.snapshot`)."""
        return snapshot.encode(self._store)

    def snapshot_job(self) -> Callable[[], bytes]:
        """Capture the state now (copies, no encoding); the function returned builds
        :meth:`snapshot`'s bytes and may run in another thread while this state
        goes on applying (:func:`cellmesh.ledger.snapshot.encoder`)."""
        return snapshot.encoder(self._store)

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot's; SnapshotError leaves it untouched."""
        self._bind(snapshot.decode(data))

    @classmethod
    def from_snapshot(cls, data: bytes) -> LedgerState:
        """A new state restored from ``data``."""
        state = cls()
        state.restore(data)
        return state


def _clock_exhausted() -> Rejected:
    return Rejected(reason="clock_exhausted",
                    detail=f"timestamps would pass {TIMESTAMP_LIMIT} (2**63) nanoseconds")

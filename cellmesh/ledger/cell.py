"""The ledger cell: :class:`~cellmesh.ledger.LedgerState` run as a replicated cell.

Theory of operation
-------------------
A manifest line makes a replicated ledger::

    [cells.ledger]
    entry = "cellmesh.ledger:Ledger"    # no dna: the class ships with cellmesh
    replicas = 3

:class:`Ledger` is a :class:`~cellmesh.ReplicatedCell` whose state machine is
one :class:`LedgerState`: the commands are the batch proteins
:class:`CreateAccounts`, :class:`CreateTransfers` and :class:`Pulse`, applied
on every replica in log order with the entry's index and leader timestamp
(``meta``); the reads (:class:`LookupAccounts`, :class:`LookupTransfers`,
:class:`GetAccountTransfers`, :class:`LookupPending`, :class:`GetTotals`,
:class:`CheckBooks`) are linearizable queries; snapshots are the ledger's
canonical, byte-identical snapshot.

Exactly once, twice over: the replicated cell's client sessions make each
*command* apply once across a client's retries and leader changes; the
ledger's ids make each *event* apply once across sessions and clients (a
resubmitted transfer answers ``exists``).

Pending transfers expire by the ledger's clock, which only log entries move:
every write expires what is due before its first event. Without writes, the
leader proposes a :class:`Pulse` once the earliest expiry has passed on its
clock (checked at least every :attr:`Ledger.pulse_poll` seconds), so a
reservation is released within about that long of its expiry.

Not pure (it is the driver); the state machine it wraps is
(``tests/ledger/test_ledger_purity.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import trio

from ..actors._replica_types import CommandMeta
from ..actors.replicated import ReplicatedCell, query
from ..errors import CellmeshError
from .proteins import (
    AccountsReply,
    BooksReport,
    CheckBooks,
    CreateAccounts,
    CreateTransfers,
    GetAccountTransfers,
    GetTotals,
    LookupAccounts,
    LookupPending,
    LookupTransfers,
    PendingReply,
    Pulse,
    Reply,
    TotalsReply,
    TransfersReply,
)
from .state import LedgerState

R = TypeVar("R")


class Ledger(ReplicatedCell):
    """A replicated double-entry ledger (see the module doc and docs/ledger.md).

    Subclass it to change the class attributes of
    :class:`~cellmesh.ReplicatedCell` (``snapshot_every``, ``session_ttl``,
    ...) or :attr:`pulse_poll`.
    """

    commands = (CreateAccounts, CreateTransfers, Pulse)
    #: Seconds per Raft tick: elections time out after 0.5-1 s (the default
    #: 0.02 gives 200-400 ms). Applying a full batch (8190 transfers) holds a
    #: replica's event loop for 50-250 ms on a loaded 2-core machine, and the
    #: three replicas apply it at about the same time; with the default,
    #: back-to-back full batches made leaders step down and followers start
    #: elections (docs/ledger.md, "Failure behaviour").
    tick_interval: ClassVar[float] = 0.05
    #: Longest wait, in seconds, between two looks at the earliest pending expiry.
    pulse_poll: ClassVar[float] = 1.0

    def __init__(self) -> None:
        self.state = LedgerState()

    # -- the state machine ---------------------------------------------------------

    def apply(self, command: Any, meta: CommandMeta) -> Reply:
        """One committed command: the ledger's reply (never raises for a ledger command)."""
        return self.state.apply(command, meta)

    def snapshot(self) -> bytes:
        """The ledger's canonical snapshot (equal ledgers, equal bytes)."""
        return self.state.snapshot()

    def snapshot_job(self) -> Callable[[], bytes]:
        """Capture the ledger now; the replica builds its snapshot in a worker thread."""
        return self.state.snapshot_job()

    def restore(self, data: bytes) -> None:
        """Replace the ledger by a snapshot's (SnapshotError leaves it as it was)."""
        self.state.restore(data)

    # -- reads (linearizable) --------------------------------------------------------

    def _read(self, q: object, kind: type[R]) -> R:
        reply = self.state.query(q)
        if not isinstance(reply, kind):  # the state machine's contract, checked
            raise TypeError(f"{type(q).__qualname__} answered {type(reply).__qualname__}")
        return reply

    @query
    def lookup_accounts(self, q: LookupAccounts) -> AccountsReply:
        """The accounts with these ids, balances as of now."""
        return self._read(q, AccountsReply)

    @query
    def lookup_transfers(self, q: LookupTransfers) -> TransfersReply:
        """The transfers with these ids."""
        return self._read(q, TransfersReply)

    @query
    def get_account_transfers(self, q: GetAccountTransfers) -> TransfersReply:
        """A page of one account's transfers by timestamp."""
        return self._read(q, TransfersReply)

    @query
    def lookup_pending(self, q: LookupPending) -> PendingReply:
        """Where each pending transfer stands."""
        return self._read(q, PendingReply)

    @query
    def get_totals(self, q: GetTotals) -> TotalsReply:
        """Per-ledger sums of every balance column."""
        return self._read(q, TotalsReply)

    @query
    def check_books(self, q: CheckBooks) -> BooksReport:
        """Every invariant: each ledger balances, no account beyond its limit."""
        return self._read(q, BooksReport)

    # -- expiry without client writes ----------------------------------------------------

    async def on_start(self) -> None:
        """Start the pulse timer (it acts only while this replica leads)."""
        self.nursery.start_soon(self._pulse_forever)

    async def _pulse_forever(self) -> None:
        while True:
            await self.wait_leading()
            due_in = self.state.pulse_due_in(time.time_ns())
            if due_in is None or due_in > 0:
                poll = self.pulse_poll
                await trio.sleep(poll if due_in is None else min(due_in, poll))
                continue
            before = self.state.next_expiry()
            try:
                await self.propose(Pulse())
            except CellmeshError:
                # Leadership moved, or the group lost its majority meanwhile: a
                # pulse is harmless to lose (the next leader's timer, or any
                # write, expires the same transfers). Look again after a poll.
                await trio.sleep(self.pulse_poll)
                continue
            if self.state.next_expiry() == before:
                # Nothing moved (a refused pulse, a leader clock behind the
                # ledger's): never spin; the next write expires it anyway.
                await trio.sleep(self.pulse_poll)


__all__ = ["Ledger"]

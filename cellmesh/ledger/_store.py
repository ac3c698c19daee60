"""The ledger's in-memory tables, the undo log of a linked chain, and expiry.

Theory of operation
-------------------
:class:`Store` is plain data shared by the engines (``_accounts``,
``_transfers``), the reads (``queries``) and the snapshot codec:

* ``accounts``: id -> :class:`Acct`, a mutable slotted record (balances and
  the ``closed`` bit change; nothing else ever does);
* ``transfers``: id -> an immutable tuple in :class:`~cellmesh.ledger.proteins.Transfer`
  field order (``Transfer(*record)`` is the protein), with its final
  timestamp and amount;
* each account's ``txs``: the records that debit or credit it, in timestamp
  order (appended as they are created), for paged history;
* ``pending``: pending transfer id -> :class:`~cellmesh.ledger.codes.PendingStatus`;
* ``failed``: ids of transfers that met a transient failure (never reusable);
* ``expiry``: a heap of ``(expires_at, timestamp, id)``; entries of transfers
  since resolved are skipped when popped, so the heap never needs deleting
  from (a linked chain's entries are pushed only once the chain holds, so a
  failed chain adds none);
* ``clock``: the last timestamp handed out; ``applied_index``: the last log index.

A linked chain records, in an :class:`Undo`, the first state of every account
it touches and every record it adds; rolling back restores exactly that, so a
failed chain leaves no trace. Expiry never runs inside a chain.

Pure: no I/O.
"""

from __future__ import annotations

import heapq
from typing import Final

from .codes import NS_PER_SECOND, PendingStatus, TransferFlags

#: Field positions of a transfer record (the Transfer protein's field order).
T_ID: Final = 0
T_DEBIT: Final = 1
T_CREDIT: Final = 2
T_AMOUNT: Final = 3
T_PENDING_ID: Final = 4
T_USER_DATA_128: Final = 5
T_USER_DATA_64: Final = 6
T_USER_DATA_32: Final = 7
T_TIMEOUT: Final = 8
T_LEDGER: Final = 9
T_CODE: Final = 10
T_FLAGS: Final = 11
T_TIMESTAMP: Final = 12
TRANSFER_FIELDS: Final = 13

#: A transfer record: 13 ints, see the T_* positions.
Record = tuple[int, int, int, int, int, int, int, int, int, int, int, int, int]

_PENDING: Final = int(PendingStatus.PENDING)
_EXPIRED: Final = int(PendingStatus.EXPIRED)
_CLOSING_DEBIT: Final = int(TransferFlags.CLOSING_DEBIT)
_CLOSING_CREDIT: Final = int(TransferFlags.CLOSING_CREDIT)


class Acct:
    """One account's stored state. ``flags`` are the creation flags, never changed."""

    __slots__ = (
        "closed",
        "code",
        "cp",
        "cpo",
        "dp",
        "dpo",
        "flags",
        "id",
        "ledger",
        "timestamp",
        "txs",
        "ud32",
        "ud64",
        "ud128",
    )

    def __init__(  # noqa: PLR0917 - one argument per field
        self, id: int, ud128: int, ud64: int, ud32: int, ledger: int, code: int,
        flags: int, timestamp: int, closed: bool,
    ) -> None:
        self.id = id
        self.dp = 0  #: debits_pending
        self.dpo = 0  #: debits_posted
        self.cp = 0  #: credits_pending
        self.cpo = 0  #: credits_posted
        self.ud128 = ud128
        self.ud64 = ud64
        self.ud32 = ud32
        self.ledger = ledger
        self.code = code
        self.flags = flags
        self.timestamp = timestamp
        self.closed = closed
        self.txs: list[Record] = []


class Store:
    """Every table of one ledger (see the module doc)."""

    __slots__ = ("accounts", "applied_index", "clock", "expiry", "failed", "pending",
                 "transfers")

    def __init__(self) -> None:
        self.accounts: dict[int, Acct] = {}
        self.transfers: dict[int, Record] = {}
        self.pending: dict[int, int] = {}
        self.failed: set[int] = set()
        self.expiry: list[tuple[int, int, int]] = []
        self.clock = 0
        self.applied_index = 0


def expires_at(record: Record) -> int:
    """When a pending record with a timeout expires (nanoseconds)."""
    return record[T_TIMESTAMP] + record[T_TIMEOUT] * NS_PER_SECOND


def expire_due(store: Store, now: int) -> int:
    """Expire every pending transfer whose expiry is ``<= now``; return how many.

    Expiry is a void by the clock: the reserved amounts go back and an account
    closed by the transfer reopens. Never called inside a linked chain.
    """
    heap = store.expiry
    transfers, pending, accounts = store.transfers, store.pending, store.accounts
    expired = 0
    while heap and heap[0][0] <= now:
        _, timestamp, tid = heapq.heappop(heap)
        record = transfers.get(tid)
        if record is None or record[T_TIMESTAMP] != timestamp or pending.get(tid) != _PENDING:
            continue  # resolved already, or created by a chain that rolled back
        debit, credit = accounts[record[T_DEBIT]], accounts[record[T_CREDIT]]
        amount = record[T_AMOUNT]
        debit.dp -= amount
        credit.cp -= amount
        flags = record[T_FLAGS]
        if flags & _CLOSING_DEBIT:
            debit.closed = False
        if flags & _CLOSING_CREDIT:
            credit.closed = False
        pending[tid] = _EXPIRED
        expired += 1
    return expired


class Undo:
    """What a linked chain changed, to put back if the chain fails."""

    __slots__ = ("accounts", "created_accounts", "expiries", "records", "statuses")

    def __init__(self) -> None:
        #: First-touch values: account -> (dp, dpo, cp, cpo, closed).
        self.accounts: dict[Acct, tuple[int, int, int, int, bool]] = {}
        self.records: list[Record] = []
        #: Pending id -> its status before the chain (None: it did not exist).
        self.statuses: dict[int, int | None] = {}
        self.created_accounts: list[int] = []
        #: Expiry entries of the chain's pending transfers, pushed only if it holds
        #: (a failed chain's entries would stay in the heap until due, maybe for decades).
        self.expiries: list[tuple[int, int, int]] = []

    def touch(self, account: Acct) -> None:
        """Remember ``account``'s balances before the chain first changes them."""
        if account not in self.accounts:
            self.accounts[account] = (
                account.dp, account.dpo, account.cp, account.cpo, account.closed,
            )

    def status(self, store: Store, tid: int) -> None:
        """Remember pending transfer ``tid``'s status before the chain first changes it."""
        if tid not in self.statuses:
            self.statuses[tid] = store.pending.get(tid)

    def commit(self, store: Store) -> None:
        """The chain held: schedule the expiries of its pending transfers."""
        heap = store.expiry
        for entry in self.expiries:
            heapq.heappush(heap, entry)

    def rollback(self, store: Store) -> None:
        """Undo everything recorded, newest first; the store is as before the chain."""
        transfers, accounts = store.transfers, store.accounts
        for record in reversed(self.records):
            del transfers[record[T_ID]]
            accounts[record[T_DEBIT]].txs.pop()
            accounts[record[T_CREDIT]].txs.pop()
        pending = store.pending
        for tid, old in self.statuses.items():
            if old is None:
                del pending[tid]
            else:
                pending[tid] = old
        for account, (dp, dpo, cp, cpo, closed) in self.accounts.items():
            account.dp, account.dpo, account.cp, account.cpo = dp, dpo, cp, cpo
            account.closed = closed
        for aid in reversed(self.created_accounts):
            del accounts[aid]

"""LedgerClient: typed, async calls to a ledger cell, over a Synapse or a cell's ``call``.

Theory of operation
-------------------
A ledger cell (:class:`~cellmesh.ledger.cell.Ledger`) answers the proteins
of :mod:`cellmesh.ledger.proteins`; this client sends them and turns the
replies into typed values::

    async with cellmesh.Synapse.grow("ledger") as syn:
        ledger = LedgerClient.over(syn)
        results = await ledger.create_transfers([Transfer(id=7, ...)])
        if results.failures(): ...

    # inside a cell:
    ledger = LedgerClient.from_cell(self, "ledger")

Writes answer one result code per event (:class:`AccountResults`,
:class:`TransferResults`); a command the ledger refused whole raises
:class:`LedgerRejected`; a batch too large to send raises
:class:`~cellmesh.ledger.errors.InvalidQuery` before anything is sent.

Retries are the transport's business and are exactly-once: a synapse to a
replicated cell resends a command after a broken connection, a leader crash
or ``retry_after`` seconds of silence, inside a client session whose
deduplication table is replicated, so a command is applied once whatever
the retries; when no copy is ever answered the call raises
:class:`~cellmesh.OutcomeUnknown` (it may or may not have been applied).
Resubmitting the *same events* after that -- or from another client -- is
safe too: an existing id answers ``exists``, never applies twice.

Other errors pass through as they are: :class:`~cellmesh.CellUnavailable`
(the call never left), :class:`~cellmesh.RemoteCellError` (a malformed
query: its type name is ``cellmesh.ledger.errors.InvalidQuery`` and its
message names the field), :class:`~cellmesh.errors.UnexpectedReply` (the
cell is not a ledger).
"""

from __future__ import annotations

import operator
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Final, Generic, TypeVar

import attrs

from ..actors.cell import Cell
from ..transport.synapse import Synapse
from .codes import BATCH_MAX, AccountResult, FilterFlags, PendingStatus, TransferResult
from .errors import InvalidQuery, LedgerError
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
    LookupAccounts,
    LookupPending,
    LookupTransfers,
    PendingReply,
    Rejected,
    TotalsReply,
    Transfer,
    TransfersReply,
)
from .queries import check_account_transfers, check_int, check_max_violations

C = TypeVar("C", AccountResult, TransferResult)
#: How the client reaches the ledger: send one protein, get its reply.
Caller = Callable[[Any], Awaitable[Any]]


class LedgerRejected(LedgerError):
    """The ledger refused a whole command; nothing of it was applied.

    ``reason`` is the :class:`~cellmesh.ledger.proteins.Rejected` reason
    (``too_many_events``, ``unknown_command``, ``clock_exhausted``), ``detail``
    says more.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"the ledger rejected the command: {reason}: {detail}")
        self.reason = reason
        self.detail = detail


class NotALedgerReply(LedgerError):
    """The cell answered a ledger request with something else (it is not a ledger)."""

    def __init__(self, request: str, got: object) -> None:
        super().__init__(f"{request} was answered with {type(got).__qualname__}, "
                         "not a ledger reply: is the cell a cellmesh.ledger:Ledger?")
        self.request = request
        self.got = type(got).__qualname__


@attrs.frozen(kw_only=True)
class Results(Generic[C]):
    """One result code per event of a create command, in order.

    ``timestamp`` is the first event's; event ``i`` ran at ``timestamp + i``.
    """

    codes: tuple[C, ...]
    timestamp: int

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, index: int) -> C:
        return self.codes[index]

    @property
    def ok(self) -> bool:
        """Every event was created now."""
        return all(code == 0 for code in self.codes)

    def failures(self) -> list[tuple[int, C]]:
        """``(index, code)`` of every event that did not return ``ok``."""
        return [(i, code) for i, code in enumerate(self.codes) if code != 0]


#: Results of ``create_accounts``.
AccountResults = Results[AccountResult]
#: Results of ``create_transfers``.
TransferResults = Results[TransferResult]


def _expect(request: object, reply: object, kind: type) -> Any:
    if isinstance(reply, Rejected):
        raise LedgerRejected(reply.reason, reply.detail)
    if not isinstance(reply, kind):
        raise NotALedgerReply(type(request).__qualname__, reply)
    return reply


E = TypeVar("E", Account, Transfer)


# The checks below are written out field by field: this runs over every event of every
# batch (up to 8190), and one ``type(...) is int`` per field costs about a third of
# what a loop over the fields would. test_ledger_client.py checks they cover every field.

def _account_is_plain(a: Account) -> bool:
    """Every field of ``a`` is exactly an ``int`` (no enum member, no bool)."""
    t = type
    return (t(a.id) is int and t(a.debits_pending) is int and t(a.debits_posted) is int
            and t(a.credits_pending) is int and t(a.credits_posted) is int
            and t(a.user_data_128) is int and t(a.user_data_64) is int
            and t(a.user_data_32) is int and t(a.ledger) is int and t(a.code) is int
            and t(a.flags) is int and t(a.timestamp) is int)


def _transfer_is_plain(x: Transfer) -> bool:
    """Every field of ``x`` is exactly an ``int`` (no enum member, no bool)."""
    t = type
    return (t(x.id) is int and t(x.debit_account_id) is int and t(x.credit_account_id) is int
            and t(x.amount) is int and t(x.pending_id) is int and t(x.user_data_128) is int
            and t(x.user_data_64) is int and t(x.user_data_32) is int and t(x.timeout) is int
            and t(x.ledger) is int and t(x.code) is int and t(x.flags) is int
            and t(x.timestamp) is int)


def _values_of(cls: Any) -> Callable[[Any], tuple[Any, ...]]:
    """A getter of every field value of a ``cls`` instance, in field order (one C call)."""
    return operator.attrgetter(*(field.name for field in attrs.fields(cls)))


_ACCOUNT_VALUES: Final = _values_of(Account)
_TRANSFER_VALUES: Final = _values_of(Transfer)


def _as_int(value: Any) -> Any:
    """An int subclass's value as a plain int; a bool, or anything else, as it is."""
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _plain(
    events: Sequence[E], cls: type[E], is_plain: Callable[[E], bool],
    values: Callable[[E], tuple[Any, ...]],
) -> list[E]:
    """The events with every int field a plain ``int``, as the wire requires.

    Members of an ``IntEnum``/``IntFlag`` (``ledger=Currency.USD``,
    ``flags=TransferFlags.PENDING``) in any field become their int values. A
    ``bool`` is left as it is -- the wire never takes one for an int, so the call
    fails with ``FieldError`` rather than reading ``True`` as 1 (``LINKED`` in
    ``flags``) -- and so is an event of another class. Events already plain are
    passed as they are (the common case, checked field by field without copying).
    """
    out = list(events)
    for i, event in enumerate(out):
        if type(event) is cls and not is_plain(event):
            out[i] = cls(*[v if type(v) is int else _as_int(v) for v in values(event)])
    return out


def _check_count(field: str, count: int, what: str) -> None:
    if count > BATCH_MAX:
        raise InvalidQuery(field, f"{count} {what}, at most {BATCH_MAX} per call: split the "
                                  "batch (at a chain boundary: a chain must stay in one call)")


@attrs.define(eq=False)
class LedgerClient:
    """Typed calls to one ledger cell (see the module doc); cheap, holds no connection."""

    _call: Caller

    @classmethod
    def over(cls, synapse: Synapse) -> LedgerClient:
        """A client over an open synapse to the ledger cell."""
        return cls(synapse.fire)

    @classmethod
    def from_cell(cls, cell: Cell, name: str = "ledger") -> LedgerClient:
        """A client for code running in a cell: calls go through ``cell.call(name, ...)``."""

        async def call(msg: Any) -> Any:
            return await cell.call(name, msg)

        return cls(call)

    # -- writes -------------------------------------------------------------------

    async def create_accounts(self, accounts: Sequence[Account]) -> AccountResults:
        """Create up to ``BATCH_MAX`` accounts in one command; one code per account.

        Enum members in any field (``flags=AccountFlags.LINKED``,
        ``ledger=Currency.USD``) are sent as plain ints; a ``bool`` is refused
        (``FieldError``), never read as 0 or 1.
        """
        _check_count("accounts", len(accounts), "accounts")
        request = CreateAccounts(events=_plain(accounts, Account, _account_is_plain,
                                                _ACCOUNT_VALUES))
        reply: CreateAccountsReply = _expect(request, await self._call(request),
                                             CreateAccountsReply)
        return Results(codes=tuple(AccountResult(r) for r in reply.results),
                       timestamp=reply.timestamp)

    async def create_transfers(self, transfers: Sequence[Transfer]) -> TransferResults:
        """Create up to ``BATCH_MAX`` transfers in one command; one code per transfer.

        A linked chain must be whole within one call. Enum members in any
        field (``flags=TransferFlags.PENDING``) are sent as plain ints; a ``bool``
        is refused (``FieldError``).
        """
        _check_count("transfers", len(transfers), "transfers")
        request = CreateTransfers(events=_plain(transfers, Transfer, _transfer_is_plain,
                                                 _TRANSFER_VALUES))
        reply: CreateTransfersReply = _expect(request, await self._call(request),
                                              CreateTransfersReply)
        return Results(codes=tuple(TransferResult(r) for r in reply.results),
                       timestamp=reply.timestamp)

    # -- reads (linearizable) ----------------------------------------------------------

    async def lookup_accounts(self, ids: Sequence[int]) -> list[Account]:
        """The accounts with these ids, in order, balances as of now; unknown ids left out."""
        _check_count("ids", len(ids), "ids")
        request = LookupAccounts(ids=list(ids))
        reply: AccountsReply = _expect(request, await self._call(request), AccountsReply)
        return reply.accounts

    async def lookup_transfers(self, ids: Sequence[int]) -> list[Transfer]:
        """The transfers with these ids, in order; unknown ids left out."""
        _check_count("ids", len(ids), "ids")
        request = LookupTransfers(ids=list(ids))
        reply: TransfersReply = _expect(request, await self._call(request), TransfersReply)
        return reply.transfers

    async def get_account_transfers(
        self,
        account_id: int,
        *,
        timestamp_min: int = 0,
        timestamp_max: int = 0,
        limit: int = BATCH_MAX,
        flags: int = FilterFlags.DEBITS | FilterFlags.CREDITS,
    ) -> list[Transfer]:
        """One page of an account's transfers by timestamp (see ``GetAccountTransfers``).

        A malformed query raises :class:`InvalidQuery` naming the field, before
        anything is sent.
        """
        check_account_transfers(account_id, timestamp_min, timestamp_max, limit, flags)
        request = GetAccountTransfers(account_id=int(account_id), timestamp_min=int(timestamp_min),
                                      timestamp_max=int(timestamp_max), limit=int(limit),
                                      flags=int(flags))
        reply: TransfersReply = _expect(request, await self._call(request), TransfersReply)
        return reply.transfers

    async def account_history(
        self, account_id: int, *, flags: int = FilterFlags.DEBITS | FilterFlags.CREDITS,
        page: int = BATCH_MAX,
    ) -> AsyncIterator[Transfer]:
        """Every transfer of an account, oldest first (newest with ``REVERSED``), page by page.

        Each page is its own linearizable read: transfers created meanwhile
        appear if they fall after the pages already read.
        """
        if isinstance(page, bool) or not isinstance(page, int) or not 1 <= page <= BATCH_MAX:
            raise InvalidQuery("page", f"must be an int in 1..{BATCH_MAX}, got {page!r}")
        reverse = bool(check_int("flags", flags) & FilterFlags.REVERSED)
        low, high = 0, 0
        while True:
            batch = await self.get_account_transfers(
                account_id, timestamp_min=low, timestamp_max=high, limit=page, flags=flags)
            for transfer in batch:
                yield transfer
            if len(batch) < page:
                return
            if reverse:
                high = batch[-1].timestamp - 1
                if high <= 0:
                    return
            else:
                low = batch[-1].timestamp + 1

    async def pending_statuses(self, ids: Sequence[int]) -> list[PendingStatus | None]:
        """Each pending transfer's status, None where the id is not a pending transfer."""
        _check_count("ids", len(ids), "ids")
        request = LookupPending(ids=list(ids))
        reply: PendingReply = _expect(request, await self._call(request), PendingReply)
        return [PendingStatus(s) if s else None for s in reply.statuses]

    async def totals(self) -> TotalsReply:
        """Per-ledger sums of every balance column (``.balanced``)."""
        request = GetTotals()
        reply: TotalsReply = _expect(request, await self._call(request), TotalsReply)
        return reply

    async def check(self, *, max_violations: int = 100) -> BooksReport:
        """Check every invariant on the live ledger (``.ok``: the books balance)."""
        check_max_violations(max_violations)
        request = CheckBooks(max_violations=max_violations)
        reply: BooksReport = _expect(request, await self._call(request), BooksReport)
        return reply


__all__ = [
    "AccountResults",
    "Caller",
    "LedgerClient",
    "LedgerRejected",
    "NotALedgerReply",
    "Results",
    "TransferResults",
]

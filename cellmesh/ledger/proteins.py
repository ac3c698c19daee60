"""The ledger's proteins: records, commands (writes), queries (reads) and replies.

Two records are both events and results: an :class:`Account` or a
:class:`Transfer` sent in a create command is the event (balances and
``timestamp`` zero, the ledger sets them); the same class comes back from a
lookup with the stored values. Every id, amount and balance is an unsigned
128-bit int (a plain Python ``int``; CBOR carries it as a bignum when it
does not fit 64 bits).

Writes -- :class:`CreateAccounts`, :class:`CreateTransfers`, :class:`Pulse` --
go through :meth:`cellmesh.ledger.LedgerState.apply` (the replicated log);
reads -- :class:`LookupAccounts`, :class:`LookupTransfers`,
:class:`GetAccountTransfers`, :class:`LookupPending`, :class:`GetTotals`,
:class:`CheckBooks` --
through :meth:`~cellmesh.ledger.LedgerState.query`, which never mutates.
Result codes travel as plain ints (:mod:`cellmesh.ledger.codes` names them).

Wire names are explicit (``cellmesh.ledger.*``) so they survive refactors.
Pure: no I/O.
"""

from __future__ import annotations

from ..wire.proteins import protein
from ..wire.replies import Request
from .codes import AccountResult, TransferResult


@protein("cellmesh.ledger.Account")
class Account:
    """An account: a create event (balances and timestamp 0) or a looked-up record."""

    id: int = 0
    debits_pending: int = 0
    debits_posted: int = 0
    credits_pending: int = 0
    credits_posted: int = 0
    user_data_128: int = 0
    user_data_64: int = 0
    user_data_32: int = 0
    ledger: int = 0
    code: int = 0
    flags: int = 0
    timestamp: int = 0


@protein("cellmesh.ledger.Transfer")
class Transfer:
    """A transfer: a create event (timestamp 0) or a looked-up, immutable record."""

    id: int = 0
    debit_account_id: int = 0
    credit_account_id: int = 0
    amount: int = 0
    pending_id: int = 0
    user_data_128: int = 0
    user_data_64: int = 0
    user_data_32: int = 0
    #: Seconds after its timestamp at which a pending transfer expires (0: never).
    timeout: int = 0
    ledger: int = 0
    code: int = 0
    flags: int = 0
    timestamp: int = 0


# -- writes -----------------------------------------------------------------


@protein("cellmesh.ledger.CreateAccounts")
class CreateAccounts(Request["CreateAccountsReply | Rejected"]):
    """Create up to ``BATCH_MAX`` accounts; one result code per event."""

    events: list[Account]


@protein("cellmesh.ledger.CreateTransfers")
class CreateTransfers(Request["CreateTransfersReply | Rejected"]):
    """Create up to ``BATCH_MAX`` transfers; one result code per event."""

    events: list[Transfer]


@protein("cellmesh.ledger.Pulse")
class Pulse(Request["PulseReply | Rejected"]):
    """Expire the pending transfers whose timeout has passed (no other effect).

    Every write expires what is due before its first event; a driver proposes
    a Pulse when :meth:`~cellmesh.ledger.LedgerState.next_expiry` has passed
    and no write came, so reserved amounts are released without client traffic.
    """


@protein("cellmesh.ledger.CreateAccountsReply")
class CreateAccountsReply:
    """One :class:`~cellmesh.ledger.codes.AccountResult` per event, in order.

    ``timestamp`` is the first event's; event ``i`` got ``timestamp + i``.
    """

    results: list[int]
    timestamp: int

    def failures(self) -> list[tuple[int, AccountResult]]:
        """``(index, result)`` of every event that did not return ``ok``."""
        return [(i, AccountResult(r)) for i, r in enumerate(self.results) if r]


@protein("cellmesh.ledger.CreateTransfersReply")
class CreateTransfersReply:
    """One :class:`~cellmesh.ledger.codes.TransferResult` per event, in order.

    ``timestamp`` is the first event's; event ``i`` got ``timestamp + i``.
    """

    results: list[int]
    timestamp: int

    def failures(self) -> list[tuple[int, TransferResult]]:
        """``(index, result)`` of every event that did not return ``ok``."""
        return [(i, TransferResult(r)) for i, r in enumerate(self.results) if r]


@protein("cellmesh.ledger.PulseReply")
class PulseReply:
    """How many pending transfers the pulse expired."""

    expired: int


@protein("cellmesh.ledger.Rejected")
class Rejected:
    """A whole command was refused before any event ran (nothing changed).

    ``reason`` is ``"too_many_events"`` (more than ``BATCH_MAX``) or
    ``"unknown_command"`` (not a ledger write); ``detail`` says more.
    """

    reason: str
    detail: str


# -- reads ------------------------------------------------------------------


@protein("cellmesh.ledger.LookupAccounts")
class LookupAccounts(Request["AccountsReply"]):
    """The accounts with these ids (missing ones are left out; up to ``BATCH_MAX``)."""

    ids: list[int]


@protein("cellmesh.ledger.LookupTransfers")
class LookupTransfers(Request["TransfersReply"]):
    """The transfers with these ids (missing ones are left out; up to ``BATCH_MAX``)."""

    ids: list[int]


@protein("cellmesh.ledger.GetAccountTransfers")
class GetAccountTransfers(Request["TransfersReply"]):
    """A page of one account's transfers, by timestamp (see ``AccountFilter`` in the docs).

    ``timestamp_min``/``timestamp_max`` bound the page inclusively (0: no
    bound); ``flags`` picks debits, credits (at least one) and the order; at
    most ``limit`` (1 to ``BATCH_MAX``) transfers. The next page starts one
    nanosecond past the last timestamp returned (before it, if reversed).
    """

    account_id: int
    timestamp_min: int = 0
    timestamp_max: int = 0
    limit: int = 8190
    flags: int = 3


@protein("cellmesh.ledger.LookupPending")
class LookupPending(Request["PendingReply"]):
    """Where each of these pending transfers stands (0 where the id is not a pending transfer)."""

    ids: list[int]


@protein("cellmesh.ledger.GetTotals")
class GetTotals(Request["TotalsReply"]):
    """Per-ledger sums of every balance column (the books must balance)."""


@protein("cellmesh.ledger.CheckBooks")
class CheckBooks(Request["BooksReport"]):
    """Check the ledger's invariants now: every ledger balances, no account past its limit.

    At most ``max_violations`` (1 to ``BATCH_MAX``) offending accounts are listed;
    all of them are counted.
    """

    max_violations: int = 100


@protein("cellmesh.ledger.AccountsReply")
class AccountsReply:
    """Accounts found, in request order."""

    accounts: list[Account]


@protein("cellmesh.ledger.TransfersReply")
class TransfersReply:
    """Transfers found, in request (or page) order."""

    transfers: list[Transfer]


@protein("cellmesh.ledger.PendingReply")
class PendingReply:
    """One :class:`~cellmesh.ledger.codes.PendingStatus` value (or 0) per requested id."""

    statuses: list[int]


@protein("cellmesh.ledger.LedgerTotals")
class LedgerTotals:
    """The sums of one ledger's balance columns over its accounts."""

    ledger: int
    accounts: int
    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int

    @property
    def balanced(self) -> bool:
        """Double entry holds: debits equal credits, pending and posted alike."""
        return (
            self.debits_pending == self.credits_pending
            and self.debits_posted == self.credits_posted
        )


@protein("cellmesh.ledger.TotalsReply")
class TotalsReply:
    """Every ledger's totals, by ledger number; plus the state's clock and applied index."""

    ledgers: list[LedgerTotals]
    timestamp: int
    applied_index: int

    @property
    def balanced(self) -> bool:
        """Every ledger balances."""
        return all(t.balanced for t in self.ledgers)


@protein("cellmesh.ledger.LimitViolation")
class LimitViolation:
    """An account whose balances break the limit its flags set (this must never happen).

    ``limit`` is ``"debits_must_not_exceed_credits"`` or
    ``"credits_must_not_exceed_debits"``; the balances are the account's now.
    """

    account_id: int
    ledger: int
    limit: str
    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int


@protein("cellmesh.ledger.BooksReport")
class BooksReport:
    """The answer to :class:`CheckBooks`: per-ledger totals and every limit broken.

    ``violations`` lists the first offending accounts by id (at most the
    request's ``max_violations``); ``violation_count`` counts all of them.
    ``timestamp`` and ``applied_index`` say which state was checked.
    """

    ledgers: list[LedgerTotals]
    violations: list[LimitViolation]
    violation_count: int
    transfers: int
    timestamp: int
    applied_index: int

    @property
    def unbalanced(self) -> list[LedgerTotals]:
        """The ledgers whose debits and credits differ (pending or posted)."""
        return [t for t in self.ledgers if not t.balanced]

    @property
    def ok(self) -> bool:
        """The books balance: every ledger balances and no limit is exceeded."""
        return self.violation_count == 0 and not self.unbalanced


Command = CreateAccounts | CreateTransfers | Pulse
Reply = CreateAccountsReply | CreateTransfersReply | PulseReply | Rejected
Query = (
    LookupAccounts | LookupTransfers | GetAccountTransfers | LookupPending | GetTotals | CheckBooks
)
QueryReply = AccountsReply | TransfersReply | PendingReply | TotalsReply | BooksReport

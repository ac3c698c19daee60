"""Helpers for the ledger tests: a ledger driven like a replicated log would drive it."""

from __future__ import annotations

from typing import Any

from cellmesh.ledger import (
    Account,
    ApplyMeta,
    CreateAccounts,
    CreateAccountsReply,
    CreateTransfers,
    CreateTransfersReply,
    LedgerState,
    Pulse,
    PulseReply,
    Transfer,
)

SECOND = 1_000_000_000
#: The first command's timestamp (an arbitrary, realistic epoch time).
EPOCH = 1_700_000_000 * SECOND


class Book:
    """A :class:`LedgerState` plus the log position: each call is the next committed entry.

    ``now`` is the leader timestamp the next entry carries; it moves by one
    second per entry unless ``at`` is given, and :meth:`advance` jumps it.
    """

    def __init__(self) -> None:
        self.state = LedgerState()
        self.index = 0
        self.now = EPOCH

    def _meta(self, at: int | None) -> ApplyMeta:
        self.index += 1
        if at is not None:
            self.now = at
        meta = ApplyMeta(index=self.index, timestamp=self.now)
        self.now += SECOND
        return meta

    def advance(self, seconds: float) -> None:
        """Let leader time pass before the next entry."""
        self.now += int(seconds * SECOND)

    def accounts(self, *events: Account, at: int | None = None) -> list[int]:
        """Apply CreateAccounts; the result codes."""
        reply = self.state.apply(CreateAccounts(events=list(events)), self._meta(at))
        assert isinstance(reply, CreateAccountsReply), reply
        return reply.results

    def transfers(self, *events: Transfer, at: int | None = None) -> list[int]:
        """Apply CreateTransfers; the result codes."""
        reply = self.state.apply(CreateTransfers(events=list(events)), self._meta(at))
        assert isinstance(reply, CreateTransfersReply), reply
        return reply.results

    def pulse(self, at: int | None = None) -> int:
        """Apply a Pulse; how many pending transfers expired."""
        reply = self.state.apply(Pulse(), self._meta(at))
        assert isinstance(reply, PulseReply), reply
        return reply.expired

    def account(self, aid: int) -> Account:
        """The account ``aid`` as it is now (it must exist)."""
        (found,) = self.state.lookup_accounts([aid])
        return found

    def balances(self, aid: int) -> tuple[int, int, int, int]:
        """(debits_pending, debits_posted, credits_pending, credits_posted) of ``aid``."""
        a = self.account(aid)
        return a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted

    def transfer(self, tid: int) -> Transfer | None:
        """The stored transfer ``tid``, or None."""
        found = self.state.lookup_transfers([tid])
        return found[0] if found else None


def acct(aid: int, **fields: Any) -> Account:
    """An account event on ledger 1, code 10, unless ``fields`` say otherwise."""
    fields.setdefault("ledger", 1)
    fields.setdefault("code", 10)
    return Account(id=aid, **fields)


def xfer(tid: int, debit: int = 0, credit: int = 0, amount: int = 0, **fields: Any) -> Transfer:
    """A transfer event on ledger 1, code 1, unless ``fields`` say otherwise."""
    fields.setdefault("ledger", 1)
    fields.setdefault("code", 1)
    return Transfer(id=tid, debit_account_id=debit, credit_account_id=credit, amount=amount,
                    **fields)


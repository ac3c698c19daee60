"""Hostile input: whatever well-typed command or query a client sends, the ledger answers.

Invariant: ``apply`` returns a reply for any command (a result code per
event, every code a known one) and the books still balance; ``query``
returns a reply or raises only ``InvalidQuery``. Ints here are unbounded,
negative, or far wider than any field.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledgerkit import EPOCH, Book, acct, xfer

from cellmesh.ledger import (
    Account,
    AccountResult,
    ApplyMeta,
    CreateAccounts,
    CreateTransfers,
    GetAccountTransfers,
    InvalidQuery,
    LedgerState,
    LookupAccounts,
    LookupPending,
    LookupTransfers,
    Rejected,
    Transfer,
    TransferResult,
)

wild = st.one_of(
    st.integers(min_value=0, max_value=8),
    st.integers(),
    st.sampled_from([-1, 1 << 16, 1 << 32, 1 << 64, (1 << 128) - 1, 1 << 128, 10 ** 60]),
)
accounts = st.builds(Account, id=wild, debits_pending=wild, debits_posted=wild,
                     credits_pending=wild, credits_posted=wild, user_data_128=wild,
                     user_data_64=wild, user_data_32=wild, ledger=wild, code=wild, flags=wild,
                     timestamp=wild)
transfers = st.builds(Transfer, id=wild, debit_account_id=wild, credit_account_id=wild,
                      amount=wild, pending_id=wild, user_data_128=wild, user_data_64=wild,
                      user_data_32=wild, timeout=wild, ledger=wild, code=wild, flags=wild,
                      timestamp=wild)


def _seeded() -> Book:
    book = Book()
    assert book.accounts(*(acct(i) for i in range(1, 6)), acct(6, flags=2)) == [0] * 6
    assert book.transfers(xfer(1, 1, 2, 50), xfer(2, 2, 3, 9, flags=2, timeout=1)) == [0, 0]
    return book


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(account_events=st.lists(accounts, max_size=6),
       transfer_events=st.lists(transfers, max_size=12),
       timestamp=st.integers(min_value=0, max_value=(1 << 63) + 5))
def test_fuzz_any_command_gets_a_reply_and_the_books_balance(
    account_events: list[Account], transfer_events: list[Transfer], timestamp: int,
) -> None:
    book = _seeded()
    state = book.state
    for index, command in enumerate((CreateAccounts(events=account_events),
                                     CreateTransfers(events=transfer_events)), 10):
        reply = state.apply(command, ApplyMeta(index=index, timestamp=timestamp))
        if isinstance(reply, Rejected):
            assert reply.reason == "clock_exhausted"
            continue
        events: list[Any] = command.events
        assert len(reply.results) == len(events)  # type: ignore[union-attr]
        known = AccountResult if isinstance(command, CreateAccounts) else TransferResult
        for code in reply.results:  # type: ignore[union-attr]
            assert type(code) is int
            known(code)
    assert all(total.balanced for total in state.totals())
    image = state.snapshot()
    assert LedgerState.from_snapshot(image).snapshot() == image


@settings(max_examples=300, deadline=None)
@given(account_id=wild, lo=wild, hi=wild, limit=wild, flags=wild,
       ids=st.lists(wild, max_size=5))
def test_fuzz_any_query_gets_a_reply_or_invalid_query(
    *, account_id: int, lo: int, hi: int, limit: int, flags: int, ids: list[int],
) -> None:
    state = _seeded().state
    for request in (GetAccountTransfers(account_id=account_id, timestamp_min=lo,
                                        timestamp_max=hi, limit=limit, flags=flags),
                    LookupAccounts(ids=ids), LookupTransfers(ids=ids), LookupPending(ids=ids)):
        try:
            state.query(request)
        except InvalidQuery as exc:
            assert exc.field


@pytest.mark.parametrize("command", [None, "transfer", b"\x00", 42, [Transfer(id=1)]])
def test_fuzz_non_protein_commands_are_rejected(command: object) -> None:
    state = LedgerState()
    reply = state.apply(command, ApplyMeta(index=1, timestamp=EPOCH))
    assert isinstance(reply, Rejected) and reply.reason == "unknown_command"
    with pytest.raises(InvalidQuery):
        state.query(command)

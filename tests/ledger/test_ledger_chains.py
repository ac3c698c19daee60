"""Linked chains: all or nothing, the failing event's own code, no trace of a failure."""

from __future__ import annotations

import pytest
from ledgerkit import Book, acct, xfer

from cellmesh.ledger import AccountFlags, AccountResult, PendingStatus, TransferFlags
from cellmesh.ledger import TransferResult as T
from cellmesh.ledger.snapshot import decode

L = TransferFlags.LINKED
PEND = TransferFlags.PENDING
POST = TransferFlags.POST_PENDING_TRANSFER
VOID = TransferFlags.VOID_PENDING_TRANSFER
FAILED = T.LINKED_EVENT_FAILED


def _book() -> Book:
    book = Book()
    assert book.accounts(acct(1), acct(2), acct(3),
                         acct(4, flags=AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)) == [0] * 4
    return book


def test_chains_failure_in_the_middle_leaves_no_trace() -> None:
    book = _book()
    assert book.transfers(xfer(5, 1, 2, 1000, flags=PEND)) == [0]
    before = book.state.snapshot()
    results = book.transfers(
        xfer(10, 1, 2, 10, flags=L),                    # posted
        xfer(11, 2, 3, 5, flags=L | PEND, timeout=60),  # pending, with an expiry
        xfer(12, pending_id=5, flags=L | POST, amount=400),  # resolves 5
        xfer(13, 4, 1, 1, flags=L),                     # exceeds credits: the chain fails
        xfer(14, 1, 3, 7),                              # last of the chain, never run
    )
    assert results == [FAILED, FAILED, FAILED, T.EXCEEDS_CREDITS, FAILED]
    # Nothing of 10..12 remains: balances, records, pending status, histories.
    for tid in (10, 11, 12, 14):
        assert book.transfer(tid) is None
    assert book.state.pending_status(5) is PendingStatus.PENDING
    assert book.state.pending_status(11) is None
    assert book.state.get_account_transfers(3) == []
    after = book.state.snapshot()
    # Only the clock, the applied index and id 13's transient failure differ:
    b, a = decode(before), decode(after)
    assert {k: (x.dp, x.dpo, x.cp, x.cpo, x.closed) for k, x in b.accounts.items()} == {
        k: (x.dp, x.dpo, x.cp, x.cpo, x.closed) for k, x in a.accounts.items()}
    assert b.transfers == a.transfers and b.pending == a.pending
    assert a.failed - b.failed == {13}
    # Not even an expiry entry remains: a failed chain schedules nothing.
    assert book.state.next_expiry() is None
    # The rolled-back pending transfer's expiry does nothing when it falls due.
    book.advance(120)
    assert book.pulse() == 0
    # Ids of the failed chain (but the failing one) are free to use again.
    assert book.transfers(xfer(10, 1, 2, 10), xfer(13, 4, 1, 1)) == [0, T.ID_ALREADY_FAILED]


def test_chains_that_fail_schedule_no_expiry_however_many_are_sent() -> None:
    """A failed chain's pending transfers leave nothing in the expiry schedule:
    a client resending failing chains of pending transfers with long timeouts
    (nothing stored) must not grow the ledger's memory."""
    book = _book()
    chains = []
    for k in range(200):  # each: a pending transfer, then one that must fail
        chains += [xfer(100 + k, 1, 2, 1, flags=L | PEND, timeout=10**9),
                   xfer(1000 + k, 1, 1, 1)]  # accounts_must_be_different
    for _ in range(5):
        results = book.transfers(*chains)
        assert results[1::2] == [T.ACCOUNTS_MUST_BE_DIFFERENT] * 200
    assert book.state.next_expiry() is None
    # A chain that holds keeps its expiry, which falls due as documented.
    held = book.transfers(xfer(20, 1, 2, 3, flags=L | PEND, timeout=30), xfer(21, 1, 3, 1))
    assert held == [0, 0]
    assert book.state.next_expiry() is not None
    book.advance(31)
    assert book.pulse() == 1
    assert book.state.pending_status(20) is PendingStatus.EXPIRED


def test_chains_first_event_failing_fails_the_rest() -> None:
    book = _book()
    assert book.transfers(xfer(10, 1, 99, 1, flags=L), xfer(11, 1, 2, 1, flags=L),
                          xfer(12, 1, 2, 1)) == [T.CREDIT_ACCOUNT_NOT_FOUND, FAILED, FAILED]
    assert book.transfer(11) is None


def test_chains_last_event_failing_rolls_back_the_whole_chain() -> None:
    book = _book()
    assert book.transfers(xfer(10, 1, 2, 1, flags=L), xfer(11, 1, 2, 1, flags=L),
                          xfer(12, 1, 2, 1, ledger=0)) == [FAILED, FAILED,
                                                            T.LEDGER_MUST_NOT_BE_ZERO]
    assert book.balances(1) == (0, 0, 0, 0)


def test_chains_are_independent_of_each_other_and_of_single_events() -> None:
    book = _book()
    results = book.transfers(
        xfer(10, 1, 2, 1),                          # alone: ok
        xfer(11, 1, 2, 1, flags=L), xfer(12, 4, 2, 1),  # chain A: fails
        xfer(13, 1, 2, 1, flags=L), xfer(14, 2, 3, 1),  # chain B: holds
        xfer(15, 4, 2, 1),                          # alone: fails
    )
    assert results == [0, FAILED, T.EXCEEDS_CREDITS, 0, 0, T.EXCEEDS_CREDITS]
    assert book.balances(1) == (0, 2, 0, 0)


def test_chains_each_event_sees_the_ones_before_it() -> None:
    book = _book()
    # Fund 4 and spend the funds within one chain; create a pending and post it.
    assert book.transfers(
        xfer(10, 1, 4, 50, flags=L), xfer(11, 4, 2, 50, flags=L),
        xfer(12, 2, 3, 20, flags=L | PEND), xfer(13, pending_id=12, flags=POST, amount=20),
    ) == [0, 0, 0, 0]
    assert book.balances(4) == (0, 50, 0, 50)
    assert book.balances(3) == (0, 0, 0, 20)


def test_chains_open_at_the_end_of_the_batch_run_nothing() -> None:
    book = _book()
    assert book.transfers(xfer(9, 1, 2, 1), xfer(10, 1, 2, 1, flags=L),
                          xfer(11, 1, 2, 1, flags=L)) == [0, FAILED, T.LINKED_EVENT_CHAIN_OPEN]
    assert book.transfer(10) is None
    assert book.balances(1) == (0, 1, 0, 0)


def test_chains_retried_committed_chain_answers_exists_throughout() -> None:
    book = _book()
    chain = [xfer(10, 1, 2, 5, flags=L), xfer(11, 2, 3, 5)]
    assert book.transfers(*chain) == [0, 0]
    assert book.transfers(*chain) == [T.EXISTS, T.EXISTS]
    assert book.balances(2) == (0, 5, 0, 5)


def test_chains_exists_with_different_fields_fails_the_chain() -> None:
    book = _book()
    assert book.transfers(xfer(10, 1, 2, 5)) == [0]
    assert book.transfers(xfer(11, 1, 2, 5, flags=L), xfer(10, 1, 2, 6)) == [
        FAILED, T.EXISTS_WITH_DIFFERENT_AMOUNT]
    assert book.transfer(11) is None


def test_chains_a_voided_closing_transfer_rolls_back_to_closed() -> None:
    book = _book()
    closing = PEND | TransferFlags.CLOSING_DEBIT
    assert book.transfers(xfer(10, 1, 2, 0, flags=closing)) == [0]
    assert book.transfers(xfer(11, pending_id=10, flags=VOID | L),
                          xfer(12, 1, 2, 5, flags=L), xfer(13, 1, 2, 5, ledger=2)) == [
        FAILED, FAILED, T.TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS]
    assert book.account(1).flags & AccountFlags.CLOSED
    assert book.state.pending_status(10) is PendingStatus.PENDING


def test_chains_of_accounts_are_atomic_too() -> None:
    book = Book()
    LA = AccountFlags.LINKED
    assert book.accounts(acct(1, flags=LA), acct(2, flags=LA), acct(3, code=0)) == [
        AccountResult.LINKED_EVENT_FAILED, AccountResult.LINKED_EVENT_FAILED,
        AccountResult.CODE_MUST_NOT_BE_ZERO]
    assert book.state.lookup_accounts([1, 2, 3]) == []
    assert book.accounts(acct(1, flags=LA), acct(2)) == [0, 0]
    assert book.accounts(acct(1, flags=LA), acct(2)) == [AccountResult.EXISTS] * 2


def test_chains_in_a_batch_of_thousands() -> None:
    book = Book()
    assert book.accounts(*(acct(i) for i in range(1, 101))) == [0] * 100
    events = []
    for k in range(2000):  # 1000 chains of two; every 10th chain fails on its second event
        a, b = 1 + k % 100, 1 + (k + 1) % 100
        events.append(xfer(10_000 + 2 * k, a, b, 3, flags=L))
        events.append(xfer(10_001 + 2 * k, b, a, 1, ledger=0 if k % 10 == 0 else 1))
    results = book.transfers(*events)
    failed_chains = sum(1 for k in range(2000) if k % 10 == 0)
    assert results.count(T.LEDGER_MUST_NOT_BE_ZERO) == failed_chains
    assert results.count(FAILED) == failed_chains
    assert results.count(0) == 2 * (2000 - failed_chains)
    (total,) = book.state.totals()
    assert total.balanced and total.debits_posted == 4 * (2000 - failed_chains)



@pytest.mark.parametrize("bad", [-1, (1 << 16) | 1, -(1 << 40) | 1])
def test_chains_flags_out_of_range_do_not_link(bad: int) -> None:
    """Flags outside 16 bits (negative or wider) are read as no flag at all: an event
    with them fails with field_out_of_range and does not chain to the next event."""
    book = _book()
    # Followed by a valid event (the bulk path), and last in its batch.
    assert book.transfers(xfer(20, 1, 2, 1, flags=bad), xfer(21, 1, 2, 1)) == [
        T.FIELD_OUT_OF_RANGE, 0]
    assert book.transfers(xfer(20, 1, 2, 1, flags=bad)) == [T.FIELD_OUT_OF_RANGE]
    # After a linked event it ends that chain, failing it; the next event stands alone.
    assert book.transfers(xfer(22, 1, 2, 1, flags=L), xfer(23, 1, 2, 1, flags=bad),
                          xfer(24, 1, 2, 1)) == [FAILED, T.FIELD_OUT_OF_RANGE, 0]
    assert book.transfer(22) is None
    assert book.balances(2) == (0, 0, 0, 2)
    # Accounts alike.
    A = AccountResult
    assert book.accounts(acct(10, flags=bad), acct(11)) == [A.FIELD_OUT_OF_RANGE, 0]
    assert book.accounts(acct(12), acct(13, flags=bad)) == [0, A.FIELD_OUT_OF_RANGE]
    assert book.accounts(acct(14, flags=AccountFlags.LINKED), acct(15, flags=bad),
                         acct(16)) == [A.LINKED_EVENT_FAILED, A.FIELD_OUT_OF_RANGE, 0]
    assert [a.id for a in book.state.lookup_accounts(list(range(10, 17)))] == [11, 12, 16]

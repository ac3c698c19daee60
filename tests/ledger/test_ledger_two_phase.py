"""Two-phase transfers: reserve, then post (all or part), void, or expire by the clock."""

from __future__ import annotations

from ledgerkit import SECOND, Book, acct, xfer

from cellmesh.ledger import (
    AMOUNT_MAX,
    AccountFlags,
    PendingStatus,
    TransferFlags,
    TransferResult,
)

T = TransferResult
PEND = TransferFlags.PENDING
POST = TransferFlags.POST_PENDING_TRANSFER
VOID = TransferFlags.VOID_PENDING_TRANSFER


def _book(*flags: int) -> Book:
    book = Book()
    assert book.accounts(acct(1), acct(2), *(acct(3 + k, flags=f) for k, f in enumerate(flags))
                         ) == [0] * (2 + len(flags))
    return book


def test_two_phase_pending_reserves_without_posting() -> None:
    book = _book()
    assert book.transfers(xfer(10, 1, 2, 100, flags=PEND)) == [0]
    assert book.balances(1) == (100, 0, 0, 0)
    assert book.balances(2) == (0, 0, 100, 0)
    assert book.state.pending_status(10) is PendingStatus.PENDING


def test_two_phase_post_full_amount_with_amount_max() -> None:
    book = _book()
    assert book.transfers(xfer(10, 1, 2, 100, flags=PEND, user_data_64=7)) == [0]
    assert book.transfers(xfer(11, pending_id=10, amount=AMOUNT_MAX, flags=POST,
                               ledger=0, code=0)) == [0]
    assert book.balances(1) == (0, 100, 0, 0)
    assert book.balances(2) == (0, 0, 0, 100)
    assert book.state.pending_status(10) is PendingStatus.POSTED
    posted = book.transfer(11)
    assert posted is not None
    # Zero fields took the pending transfer's values; the amount is what moved.
    assert (posted.debit_account_id, posted.credit_account_id, posted.amount, posted.ledger,
            posted.code, posted.user_data_64) == (1, 2, 100, 1, 1, 7)


def test_two_phase_post_partial_amount_releases_the_rest() -> None:
    book = _book()
    assert book.transfers(xfer(10, 1, 2, 100, flags=PEND)) == [0]
    assert book.transfers(xfer(11, 1, 2, 60, pending_id=10, flags=POST)) == [0]
    assert book.balances(1) == (0, 60, 0, 0)
    assert book.balances(2) == (0, 0, 0, 60)
    assert book.transfer(11).amount == 60  # type: ignore[union-attr]


def test_two_phase_void_releases_everything() -> None:
    book = _book()
    assert book.transfers(xfer(10, 1, 2, 100, flags=PEND)) == [0]
    assert book.transfers(xfer(11, pending_id=10, flags=VOID, ledger=0, code=0)) == [0]
    assert book.balances(1) == book.balances(2) == (0, 0, 0, 0)
    assert book.state.pending_status(10) is PendingStatus.VOIDED
    assert book.transfer(11).amount == 100  # type: ignore[union-attr]


def test_two_phase_resolves_at_most_once() -> None:
    book = _book()
    assert book.transfers(xfer(10, 1, 2, 100, flags=PEND)) == [0]
    assert book.transfers(
        xfer(11, pending_id=10, flags=POST, amount=40),
        xfer(12, pending_id=10, flags=POST, amount=40),
        xfer(13, pending_id=10, flags=VOID),
    ) == [0, T.PENDING_TRANSFER_ALREADY_POSTED, T.PENDING_TRANSFER_ALREADY_POSTED]
    assert book.balances(1) == (0, 40, 0, 0)


def test_two_phase_expires_deterministically_on_the_next_write() -> None:
    book = _book()
    assert book.transfers(xfer(10, 1, 2, 100, flags=PEND, timeout=30)) == [0]
    created = book.transfer(10).timestamp  # type: ignore[union-attr]
    expiry = created + 30 * SECOND
    assert book.state.next_expiry() == expiry
    # One nanosecond before the expiry nothing is released...
    assert book.accounts(acct(50), at=expiry - 1) == [0]
    assert book.balances(1) == (100, 0, 0, 0)
    # ...at the expiry, any write releases it before its first event.
    assert book.accounts(acct(51), at=expiry) == [0]
    assert book.balances(1) == book.balances(2) == (0, 0, 0, 0)
    assert book.state.pending_status(10) is PendingStatus.EXPIRED
    assert book.transfers(xfer(11, pending_id=10, flags=VOID)) == [T.PENDING_TRANSFER_EXPIRED]


def test_two_phase_pulse_expires_without_client_writes() -> None:
    book = _book()
    assert book.transfers(xfer(10, 1, 2, 100, flags=PEND, timeout=1),
                          xfer(11, 1, 2, 5, flags=PEND, timeout=2),
                          xfer(12, 1, 2, 7, flags=PEND)) == [0, 0, 0]
    first = book.transfer(10).timestamp  # type: ignore[union-attr]
    assert book.pulse(at=first + SECOND) == 1
    assert book.balances(1) == (12, 0, 0, 0)
    assert book.pulse(at=first + 10 * SECOND) == 1
    assert book.balances(1) == (7, 0, 0, 0)  # no timeout: never expires
    assert book.state.next_expiry() is None
    assert book.pulse() == 0


def test_two_phase_expiry_order_is_by_expiry_then_creation() -> None:
    book = _book()
    assert book.transfers(xfer(10, 1, 2, 1, flags=PEND, timeout=5),
                          xfer(11, 1, 2, 1, flags=PEND, timeout=3)) == [0, 0]
    t10 = book.transfer(10).timestamp  # type: ignore[union-attr]
    t11 = book.transfer(11).timestamp  # type: ignore[union-attr]
    assert book.pulse(at=t11 + 3 * SECOND) == 1
    assert book.state.pending_status(11) is PendingStatus.EXPIRED
    assert book.state.pending_status(10) is PendingStatus.PENDING
    assert book.pulse(at=t10 + 5 * SECOND) == 1


def test_two_phase_post_before_expiry_wins() -> None:
    book = _book()
    assert book.transfers(xfer(10, 1, 2, 100, flags=PEND, timeout=1)) == [0]
    expiry = book.transfer(10).timestamp + SECOND  # type: ignore[union-attr]
    assert book.transfers(xfer(11, pending_id=10, flags=POST, amount=AMOUNT_MAX),
                          at=expiry - 1) == [0]
    assert book.pulse(at=expiry + 5 * SECOND) == 0
    assert book.balances(2) == (0, 0, 0, 100)


def test_two_phase_limits_count_pending_amounts() -> None:
    """A pending debit reserves funds: a second one cannot spend them again."""
    book = _book(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
    assert book.transfers(xfer(10, 1, 3, 100)) == [0]  # fund account 3 with 100
    assert book.transfers(xfer(11, 3, 2, 70, flags=PEND),
                          xfer(12, 3, 2, 50, flags=PEND),
                          xfer(13, 3, 2, 30, flags=PEND)) == [0, T.EXCEEDS_CREDITS, 0]
    # Voiding one frees its reservation.
    assert book.transfers(xfer(14, pending_id=11, flags=VOID),
                          xfer(15, 3, 2, 50)) == [0, 0]
    assert book.balances(3) == (30, 50, 0, 100)


def test_two_phase_closing_transfer_closes_and_void_reopens() -> None:
    book = _book()
    closing = PEND | TransferFlags.CLOSING_DEBIT | TransferFlags.CLOSING_CREDIT
    assert book.transfers(xfer(10, 1, 2, 0, flags=closing)) == [0]
    closed = int(AccountFlags.CLOSED)
    assert book.account(1).flags & closed and book.account(2).flags & closed
    assert book.transfers(xfer(11, 1, 2, 5), xfer(12, 2, 1, 5)) == [
        T.DEBIT_ACCOUNT_ALREADY_CLOSED, T.DEBIT_ACCOUNT_ALREADY_CLOSED]
    assert book.transfers(xfer(13, pending_id=10, flags=VOID)) == [0]
    assert not book.account(1).flags & closed
    assert book.transfers(xfer(14, 1, 2, 5)) == [0]


def test_two_phase_expiring_closing_transfer_reopens() -> None:
    book = _book()
    assert book.transfers(xfer(10, 1, 2, 0, flags=PEND | TransferFlags.CLOSING_CREDIT,
                               timeout=10)) == [0]
    assert book.transfers(xfer(11, 1, 2, 5)) == [T.CREDIT_ACCOUNT_ALREADY_CLOSED]
    book.advance(20)
    assert book.transfers(xfer(12, 1, 2, 5)) == [0]


def test_two_phase_void_works_on_a_closed_account() -> None:
    book = _book()
    assert book.transfers(xfer(10, 1, 2, 100, flags=PEND),
                          xfer(11, 1, 2, 0, flags=PEND | TransferFlags.CLOSING_DEBIT)) == [0, 0]
    assert book.transfers(xfer(12, pending_id=10, flags=VOID)) == [0]
    assert book.balances(1) == (0, 0, 0, 0)


def test_two_phase_a_closing_transfer_cannot_be_posted_only_voided() -> None:
    """As in TigerBeetle: the account a pending transfer closed refuses the post of that
    transfer too (remembered: a retry gets id_already_failed); voiding it reopens the
    account, and then another post id of it would be refused as already voided."""
    book = _book()
    for closing, code in ((TransferFlags.CLOSING_DEBIT, T.DEBIT_ACCOUNT_ALREADY_CLOSED),
                          (TransferFlags.CLOSING_CREDIT, T.CREDIT_ACCOUNT_ALREADY_CLOSED)):
        base = 100 if closing is TransferFlags.CLOSING_DEBIT else 200
        assert book.transfers(xfer(base, 1, 2, 5, flags=PEND | closing)) == [0]
        assert book.transfers(xfer(base + 1, pending_id=base, flags=POST, amount=AMOUNT_MAX),
                              xfer(base + 2, pending_id=base, flags=POST, amount=2)) == [
            code, code]
        assert book.transfers(xfer(base + 1, pending_id=base, flags=POST,
                                   amount=AMOUNT_MAX)) == [T.ID_ALREADY_FAILED]
        assert book.state.pending_status(base) is PendingStatus.PENDING
        assert book.transfers(xfer(base + 3, pending_id=base, flags=VOID)) == [0]
        assert not book.account(1).flags & AccountFlags.CLOSED
        assert not book.account(2).flags & AccountFlags.CLOSED
        assert book.transfers(xfer(base + 4, pending_id=base, flags=POST, amount=1)) == [
            T.PENDING_TRANSFER_ALREADY_VOIDED]


def test_two_phase_retried_post_is_idempotent() -> None:
    book = _book()
    assert book.transfers(xfer(10, 1, 2, 100, flags=PEND),
                          xfer(11, pending_id=10, flags=POST, amount=AMOUNT_MAX)) == [0, 0]
    # The same event again, or with the stored amount spelled out: exists.
    assert book.transfers(xfer(11, pending_id=10, flags=POST, amount=AMOUNT_MAX),
                          xfer(11, pending_id=10, flags=POST, amount=100),
                          xfer(11, pending_id=10, flags=POST, amount=99)) == [
        T.EXISTS, T.EXISTS, T.EXISTS_WITH_DIFFERENT_AMOUNT]
    assert book.balances(1) == (0, 100, 0, 0)


def test_two_phase_retried_full_post_matches_its_amount_or_amount_max_only() -> None:
    """Once a post was full, a retry matches with the amount posted or AMOUNT_MAX; any
    other amount -- above the reserved one too -- is a different transfer."""
    book = _book()
    assert book.transfers(xfer(10, 1, 2, 100, flags=PEND),
                          xfer(11, pending_id=10, flags=POST, amount=AMOUNT_MAX)) == [0, 0]
    assert book.transfers(*(xfer(11, pending_id=10, flags=POST, amount=amount)
                            for amount in (101, 10**6, AMOUNT_MAX - 1, 100, AMOUNT_MAX))) == [
        T.EXISTS_WITH_DIFFERENT_AMOUNT] * 3 + [T.EXISTS] * 2
    # A partial post matches its own amount only: AMOUNT_MAX would have posted all of it.
    assert book.transfers(xfer(20, 1, 2, 100, flags=PEND),
                          xfer(21, pending_id=20, flags=POST, amount=60)) == [0, 0]
    assert book.transfers(*(xfer(21, pending_id=20, flags=POST, amount=amount)
                            for amount in (AMOUNT_MAX, 100, 60))) == [
        T.EXISTS_WITH_DIFFERENT_AMOUNT] * 2 + [T.EXISTS]


def test_two_phase_balancing_debit_moves_at_most_the_available() -> None:
    book = _book(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
    assert book.transfers(xfer(10, 1, 3, 80)) == [0]
    # Drain account 3: ask for up to 1000, get the 80 it has.
    assert book.transfers(xfer(11, 3, 2, 1000, flags=TransferFlags.BALANCING_DEBIT)) == [0]
    assert book.transfer(11).amount == 80  # type: ignore[union-attr]
    assert book.balances(3) == (0, 80, 0, 80)
    # A retry with a max at least what moved is the same transfer; less is not.
    assert book.transfers(xfer(11, 3, 2, 500, flags=TransferFlags.BALANCING_DEBIT),
                          xfer(11, 3, 2, 79, flags=TransferFlags.BALANCING_DEBIT)) == [
        T.EXISTS, T.EXISTS_WITH_DIFFERENT_AMOUNT]


def test_two_phase_balancing_credit_moves_at_most_the_room() -> None:
    book = _book(AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS)
    assert book.transfers(xfer(10, 3, 1, 30)) == [0]  # account 3 has debits 30
    assert book.transfers(xfer(11, 2, 3, 100, flags=TransferFlags.BALANCING_CREDIT)) == [0]
    assert book.transfer(11).amount == 30  # type: ignore[union-attr]
    assert book.transfers(xfer(12, 2, 3, 100, flags=TransferFlags.BALANCING_CREDIT)) == [0]
    assert book.transfer(12).amount == 0  # type: ignore[union-attr]  # nothing left to move


def test_two_phase_expiry_inside_a_chain_is_checked_at_the_event_timestamp() -> None:
    """Expiry never runs inside a chain, but a post there still sees the deadline."""
    book = _book()
    assert book.transfers(xfer(10, 1, 2, 100, flags=PEND, timeout=1)) == [0]
    expiry = book.transfer(10).timestamp + SECOND  # type: ignore[union-attr]
    # The chain starts one nanosecond before the expiry; its second event is at it.
    assert book.transfers(xfer(11, 1, 2, 1, flags=TransferFlags.LINKED),
                          xfer(12, pending_id=10, flags=POST, amount=AMOUNT_MAX),
                          at=expiry - 1) == [T.LINKED_EVENT_FAILED, T.PENDING_TRANSFER_EXPIRED]
    # Not yet released (no write has run at or after the expiry outside a chain)...
    assert book.balances(1) == (100, 0, 0, 0)
    assert book.state.pending_status(10) is PendingStatus.PENDING
    # ...until the next one does.
    assert book.pulse() == 1
    assert book.balances(1) == (0, 0, 0, 0)


def test_two_phase_balancing_credit_counts_pending_credits() -> None:
    book = _book(AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS)
    assert book.transfers(xfer(10, 3, 1, 30)) == [0]  # room for 30 credits
    assert book.transfers(xfer(11, 2, 3, 20, flags=PEND)) == [0]  # 20 of it reserved
    assert book.transfers(xfer(12, 2, 3, 100, flags=TransferFlags.BALANCING_CREDIT)) == [0]
    assert book.transfer(12).amount == 10  # type: ignore[union-attr]
    assert book.balances(3) == (0, 30, 20, 10)


def test_two_phase_balancing_debit_counts_pending_debits() -> None:
    book = _book(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
    assert book.transfers(xfer(10, 1, 3, 30), xfer(11, 3, 2, 25, flags=PEND)) == [0, 0]
    assert book.transfers(xfer(12, 3, 2, 100, flags=TransferFlags.BALANCING_DEBIT)) == [0]
    assert book.transfer(12).amount == 5  # type: ignore[union-attr]

"""Every result code of create_accounts and create_transfers, each reached by a scenario.

The tables below map each code to the smallest scenario that produces it;
a test checks that every member of the enums has one (so a new code cannot
be added without a test reaching it), and docs/ledger.md's tables list the
same codes with the same numbers (tests/ledger/test_ledger_docs.py).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from ledgerkit import SECOND, Book, acct, xfer

from cellmesh.ledger import (
    AMOUNT_MAX,
    AccountFlags,
    AccountResult,
    Transfer,
    TransferFlags,
    TransferResult,
)
from cellmesh.ledger.codes import TRANSIENT_FAILURES

A = AccountResult
T = TransferResult
AF = AccountFlags
TF = TransferFlags
MAX = (1 << 128) - 1

# -- create_accounts ----------------------------------------------------------------


def _exists_with(**different: int) -> Callable[[Book], list[int]]:
    def scenario(book: Book) -> list[int]:
        assert book.accounts(acct(7, user_data_128=1, user_data_64=2, user_data_32=3)) == [0]
        base = {"user_data_128": 1, "user_data_64": 2, "user_data_32": 3}
        return book.accounts(acct(7, **{**base, **different}))

    return scenario


ACCOUNT_SCENARIOS: dict[AccountResult, Callable[[Book], list[int]]] = {
    A.OK: lambda b: b.accounts(acct(1)),
    A.LINKED_EVENT_FAILED: lambda b: b.accounts(acct(1, flags=AF.LINKED), acct(0))[:1],
    A.LINKED_EVENT_CHAIN_OPEN: lambda b: b.accounts(acct(1, flags=AF.LINKED)),
    A.FIELD_OUT_OF_RANGE: lambda b: b.accounts(acct(1, ledger=1 << 32)),
    A.TIMESTAMP_MUST_BE_ZERO: lambda b: b.accounts(acct(1, timestamp=5)),
    A.RESERVED_FLAG: lambda b: b.accounts(acct(1, flags=1 << 4)),
    A.ID_MUST_NOT_BE_ZERO: lambda b: b.accounts(acct(0)),
    A.ID_MUST_NOT_BE_INT_MAX: lambda b: b.accounts(acct(MAX)),
    A.FLAGS_ARE_MUTUALLY_EXCLUSIVE: lambda b: b.accounts(acct(
        1, flags=AF.DEBITS_MUST_NOT_EXCEED_CREDITS | AF.CREDITS_MUST_NOT_EXCEED_DEBITS)),
    A.DEBITS_PENDING_MUST_BE_ZERO: lambda b: b.accounts(acct(1, debits_pending=1)),
    A.DEBITS_POSTED_MUST_BE_ZERO: lambda b: b.accounts(acct(1, debits_posted=1)),
    A.CREDITS_PENDING_MUST_BE_ZERO: lambda b: b.accounts(acct(1, credits_pending=1)),
    A.CREDITS_POSTED_MUST_BE_ZERO: lambda b: b.accounts(acct(1, credits_posted=1)),
    A.LEDGER_MUST_NOT_BE_ZERO: lambda b: b.accounts(acct(1, ledger=0)),
    A.CODE_MUST_NOT_BE_ZERO: lambda b: b.accounts(acct(1, code=0)),
    A.EXISTS_WITH_DIFFERENT_FLAGS: _exists_with(flags=AF.DEBITS_MUST_NOT_EXCEED_CREDITS),
    A.EXISTS_WITH_DIFFERENT_USER_DATA_128: _exists_with(user_data_128=9),
    A.EXISTS_WITH_DIFFERENT_USER_DATA_64: _exists_with(user_data_64=9),
    A.EXISTS_WITH_DIFFERENT_USER_DATA_32: _exists_with(user_data_32=9),
    A.EXISTS_WITH_DIFFERENT_LEDGER: _exists_with(ledger=2),
    A.EXISTS_WITH_DIFFERENT_CODE: _exists_with(code=11),
    A.EXISTS: _exists_with(),
}


def test_result_codes_account_code_reached_by_its_scenario() -> None:
    for code, scenario in ACCOUNT_SCENARIOS.items():
        results = scenario(Book())
        assert results[-1] == code, code
        assert type(results[-1]) is int  # plain ints travel on the wire, not enum members


# -- create_transfers ---------------------------------------------------------------


def _book() -> Book:
    """Accounts 1, 2 (ledger 1), 3 (ledger 2), 4 (ledger 1, closed), 5 (ledger 1,
    debits must not exceed credits), 6 (ledger 1, credits must not exceed debits)."""
    book = Book()
    assert book.accounts(
        acct(1), acct(2), acct(3, ledger=2), acct(4, flags=AF.CLOSED),
        acct(5, flags=AF.DEBITS_MUST_NOT_EXCEED_CREDITS),
        acct(6, flags=AF.CREDITS_MUST_NOT_EXCEED_DEBITS),
    ) == [0] * 6
    return book


def _with_pending(*events_after: object, timeout: int = 0) -> Callable[[Book], list[int]]:
    """Create pending transfer 50 (1 -> 2, 100), then run ``events_after``."""
    def scenario(book: Book) -> list[int]:
        assert book.transfers(xfer(50, 1, 2, 100, flags=TF.PENDING, timeout=timeout)) == [0]
        return book.transfers(*events_after)  # type: ignore[arg-type]

    return scenario


def _resolved_twice(first: int, second: int) -> Callable[[Book], list[int]]:
    return _with_pending(xfer(51, amount=0, pending_id=50, flags=first, ledger=0, code=0),
                         xfer(52, amount=0, pending_id=50, flags=second, ledger=0, code=0))


def _expired(book: Book) -> list[int]:
    assert book.transfers(xfer(50, 1, 2, 100, flags=TF.PENDING, timeout=1)) == [0]
    book.advance(5)
    return book.transfers(xfer(51, pending_id=50, flags=TF.POST_PENDING_TRANSFER,
                               amount=AMOUNT_MAX, ledger=0, code=0))


def _expired_within_batch(book: Book) -> list[int]:
    """Expiry is checked at each event's own timestamp, even inside one batch."""
    assert book.transfers(xfer(50, 1, 2, 100, flags=TF.PENDING, timeout=1)) == [0]
    # The next entry's timestamp is exactly the expiry: base = expiry - 0.
    expiry = book.transfer(50).timestamp + SECOND  # type: ignore[union-attr]
    return book.transfers(xfer(51, pending_id=50, flags=TF.VOID_PENDING_TRANSFER,
                               ledger=0, code=0), at=expiry)


def _exists_xfer(**different: int) -> Callable[[Book], list[int]]:
    def scenario(book: Book) -> list[int]:
        base = {"debit": 1, "credit": 2, "amount": 10, "user_data_128": 1, "user_data_64": 2,
                "user_data_32": 3}
        assert book.transfers(xfer(60, **base)) == [0]
        return book.transfers(xfer(60, **{**base, **different}))

    return scenario


def _exists_pending(**different: int) -> Callable[[Book], list[int]]:
    def scenario(book: Book) -> list[int]:
        assert book.transfers(xfer(60, 1, 2, 10, flags=TF.PENDING, timeout=5)) == [0]
        return book.transfers(xfer(60, 1, 2, 10, **{"flags": TF.PENDING, "timeout": 5,
                                                    **different}))

    return scenario


def _exists_resolve(**different: int) -> Callable[[Book], list[int]]:
    def scenario(book: Book) -> list[int]:
        post = {"pending_id": 50, "flags": TF.POST_PENDING_TRANSFER}
        assert book.transfers(xfer(50, 1, 2, 100, flags=TF.PENDING),
                              xfer(51, amount=100, **post)) == [0, 0]
        return book.transfers(xfer(51, amount=100, **{**post, **different}))

    return scenario


def _overflow_setup(code: TransferResult) -> tuple[list[Transfer], Transfer]:
    """For an overflows_* code: the transfers that fill the balance it watches to near
    2**128 (account 7 must exist), and the transfer of one more unit that fails with it."""
    big = MAX - 5
    pending = TF.PENDING
    setups = {
        T.OVERFLOWS_DEBITS_PENDING: ([xfer(70, 1, 2, big, flags=pending)],
                                     xfer(71, 1, 2, 10, flags=pending)),
        T.OVERFLOWS_CREDITS_PENDING: ([xfer(70, 1, 2, big, flags=pending)],
                                      xfer(71, 7, 2, 10, flags=pending)),
        T.OVERFLOWS_DEBITS_POSTED: ([xfer(70, 1, 2, big)], xfer(71, 1, 2, 10)),
        T.OVERFLOWS_CREDITS_POSTED: ([xfer(70, 1, 2, big)], xfer(71, 7, 2, 10)),
        # debits_pending + debits_posted: each fits, the sum does not.
        T.OVERFLOWS_DEBITS: ([xfer(70, 1, 2, big)], xfer(71, 1, 7, 10, flags=pending)),
        T.OVERFLOWS_CREDITS: ([xfer(70, 1, 2, big)], xfer(71, 7, 2, 10, flags=pending)),
    }
    return setups[code]


def _overflow(code: TransferResult) -> Callable[[Book], list[int]]:
    """Fill the balance a code watches to near 2**128, then one more unit."""
    def scenario(book: Book) -> list[int]:
        assert book.accounts(acct(7)) == [0]
        setup, last = _overflow_setup(code)
        assert book.transfers(*setup) == [0] * len(setup)
        return book.transfers(last)

    return scenario


def _post_to_closed(side: str) -> Callable[[Book], list[int]]:
    """A pending transfer, then a closing transfer on one side, then the post."""
    def scenario(book: Book) -> list[int]:
        closing = TF.CLOSING_DEBIT if side == "debit" else TF.CLOSING_CREDIT
        assert book.transfers(xfer(50, 1, 2, 100, flags=TF.PENDING),
                              xfer(80, 1, 2, 0, flags=TF.PENDING | closing)) == [0, 0]
        return book.transfers(xfer(51, pending_id=50, flags=TF.POST_PENDING_TRANSFER,
                                   amount=AMOUNT_MAX, ledger=0, code=0))

    return scenario


def _not_pending(book: Book) -> list[int]:
    assert book.transfers(xfer(50, 1, 2, 100)) == [0]
    return book.transfers(xfer(51, pending_id=50, flags=TF.VOID_PENDING_TRANSFER))


def _timeout_overflow(book: Book) -> list[int]:
    # 2**32 - 1 seconds is ~136 years; from a timestamp near 2**63 it overflows.
    return book.transfers(xfer(90, 1, 2, 1, flags=TF.PENDING, timeout=(1 << 32) - 1),
                          at=(1 << 63) - 100 * SECOND)


def _id_already_failed(book: Book) -> list[int]:
    assert book.transfers(xfer(90, 5, 1, 10)) == [T.EXCEEDS_CREDITS]
    assert book.transfers(xfer(91, 1, 5, 10)) == [0]  # now 5 could pay...
    return book.transfers(xfer(90, 5, 1, 10))  # ...but id 90's failure stands


PEND = TF.PENDING
POST = TF.POST_PENDING_TRANSFER
VOID = TF.VOID_PENDING_TRANSFER

TRANSFER_SCENARIOS: dict[TransferResult, Callable[[Book], list[int]]] = {
    T.OK: lambda b: b.transfers(xfer(10, 1, 2, 5)),
    T.LINKED_EVENT_FAILED: lambda b: b.transfers(
        xfer(10, 1, 2, 5, flags=TF.LINKED), xfer(11, 1, 9, 5))[:1],
    T.LINKED_EVENT_CHAIN_OPEN: lambda b: b.transfers(xfer(10, 1, 2, 5, flags=TF.LINKED)),
    T.FIELD_OUT_OF_RANGE: lambda b: b.transfers(xfer(10, 1, 2, -5)),
    T.TIMESTAMP_MUST_BE_ZERO: lambda b: b.transfers(xfer(10, 1, 2, 5, timestamp=1)),
    T.RESERVED_FLAG: lambda b: b.transfers(xfer(10, 1, 2, 5, flags=1 << 8)),
    T.ID_MUST_NOT_BE_ZERO: lambda b: b.transfers(xfer(0, 1, 2, 5)),
    T.ID_MUST_NOT_BE_INT_MAX: lambda b: b.transfers(xfer(MAX, 1, 2, 5)),
    T.EXISTS_WITH_DIFFERENT_FLAGS: _exists_xfer(flags=TF.PENDING),
    T.EXISTS_WITH_DIFFERENT_PENDING_ID: _exists_resolve(pending_id=77),
    T.EXISTS_WITH_DIFFERENT_TIMEOUT: _exists_pending(timeout=6),
    T.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID: _exists_xfer(debit=6),
    T.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID: _exists_xfer(credit=6),
    T.EXISTS_WITH_DIFFERENT_AMOUNT: _exists_xfer(amount=11),
    T.EXISTS_WITH_DIFFERENT_USER_DATA_128: _exists_xfer(user_data_128=9),
    T.EXISTS_WITH_DIFFERENT_USER_DATA_64: _exists_xfer(user_data_64=9),
    T.EXISTS_WITH_DIFFERENT_USER_DATA_32: _exists_xfer(user_data_32=9),
    T.EXISTS_WITH_DIFFERENT_LEDGER: _exists_xfer(ledger=2),
    T.EXISTS_WITH_DIFFERENT_CODE: _exists_xfer(code=2),
    T.EXISTS: _exists_xfer(),
    T.ID_ALREADY_FAILED: _id_already_failed,
    T.FLAGS_ARE_MUTUALLY_EXCLUSIVE: lambda b: b.transfers(
        xfer(10, 1, 2, 5, pending_id=3, flags=PEND | POST)),
    T.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO: lambda b: b.transfers(xfer(10, 0, 2, 5)),
    T.DEBIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX: lambda b: b.transfers(xfer(10, MAX, 2, 5)),
    T.CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO: lambda b: b.transfers(xfer(10, 1, 0, 5)),
    T.CREDIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX: lambda b: b.transfers(xfer(10, 1, MAX, 5)),
    T.ACCOUNTS_MUST_BE_DIFFERENT: lambda b: b.transfers(xfer(10, 1, 1, 5)),
    T.PENDING_ID_MUST_BE_ZERO: lambda b: b.transfers(xfer(10, 1, 2, 5, pending_id=3)),
    T.PENDING_ID_MUST_NOT_BE_ZERO: lambda b: b.transfers(xfer(10, flags=POST)),
    T.PENDING_ID_MUST_NOT_BE_INT_MAX: lambda b: b.transfers(
        xfer(10, pending_id=MAX, flags=POST)),
    T.PENDING_ID_MUST_BE_DIFFERENT: lambda b: b.transfers(xfer(10, pending_id=10, flags=VOID)),
    T.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER: lambda b: b.transfers(
        xfer(10, 1, 2, 5, timeout=1)),
    T.CLOSING_TRANSFER_MUST_BE_PENDING: lambda b: b.transfers(
        xfer(10, 1, 2, 5, flags=TF.CLOSING_DEBIT)),
    T.LEDGER_MUST_NOT_BE_ZERO: lambda b: b.transfers(xfer(10, 1, 2, 5, ledger=0)),
    T.CODE_MUST_NOT_BE_ZERO: lambda b: b.transfers(xfer(10, 1, 2, 5, code=0)),
    T.DEBIT_ACCOUNT_NOT_FOUND: lambda b: b.transfers(xfer(10, 99, 2, 5)),
    T.CREDIT_ACCOUNT_NOT_FOUND: lambda b: b.transfers(xfer(10, 1, 99, 5)),
    T.ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER: lambda b: b.transfers(xfer(10, 1, 3, 5)),
    T.TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS: lambda b: b.transfers(
        xfer(10, 1, 2, 5, ledger=2)),
    T.PENDING_TRANSFER_NOT_FOUND: lambda b: b.transfers(xfer(10, pending_id=404, flags=POST)),
    T.PENDING_TRANSFER_NOT_PENDING: _not_pending,
    T.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID: _with_pending(
        xfer(51, 6, 0, pending_id=50, flags=VOID)),
    T.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID: _with_pending(
        xfer(51, 1, 6, pending_id=50, flags=VOID)),
    T.PENDING_TRANSFER_HAS_DIFFERENT_LEDGER: _with_pending(
        xfer(51, pending_id=50, flags=VOID, ledger=2)),
    T.PENDING_TRANSFER_HAS_DIFFERENT_CODE: _with_pending(
        xfer(51, pending_id=50, flags=VOID, code=2)),
    T.EXCEEDS_PENDING_TRANSFER_AMOUNT: _with_pending(
        xfer(51, amount=101, pending_id=50, flags=POST)),
    T.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT: _with_pending(
        xfer(51, amount=99, pending_id=50, flags=VOID)),
    T.PENDING_TRANSFER_ALREADY_POSTED: _resolved_twice(POST | 0, VOID),
    T.PENDING_TRANSFER_ALREADY_VOIDED: _resolved_twice(VOID, POST),
    T.PENDING_TRANSFER_EXPIRED: _expired,
    T.DEBIT_ACCOUNT_ALREADY_CLOSED: lambda b: b.transfers(xfer(10, 4, 2, 5)),
    T.CREDIT_ACCOUNT_ALREADY_CLOSED: lambda b: b.transfers(xfer(10, 1, 4, 5)),
    T.OVERFLOWS_DEBITS_PENDING: _overflow(T.OVERFLOWS_DEBITS_PENDING),
    T.OVERFLOWS_CREDITS_PENDING: _overflow(T.OVERFLOWS_CREDITS_PENDING),
    T.OVERFLOWS_DEBITS_POSTED: _overflow(T.OVERFLOWS_DEBITS_POSTED),
    T.OVERFLOWS_CREDITS_POSTED: _overflow(T.OVERFLOWS_CREDITS_POSTED),
    T.OVERFLOWS_DEBITS: _overflow(T.OVERFLOWS_DEBITS),
    T.OVERFLOWS_CREDITS: _overflow(T.OVERFLOWS_CREDITS),
    T.OVERFLOWS_TIMEOUT: _timeout_overflow,
    T.EXCEEDS_CREDITS: lambda b: b.transfers(xfer(10, 5, 1, 1)),
    T.EXCEEDS_DEBITS: lambda b: b.transfers(xfer(10, 1, 6, 1)),
}


@pytest.mark.parametrize("code", list(TransferResult), ids=lambda c: c.name.lower())
def test_result_codes_transfer_code_reached(code: TransferResult) -> None:
    book = _book()
    results = TRANSFER_SCENARIOS[code](book)
    assert results[-1] == code
    assert type(results[-1]) is int
    assert all(total.balanced for total in book.state.totals())


@pytest.mark.parametrize(("enum", "scenarios"), [
    (AccountResult, ACCOUNT_SCENARIOS), (TransferResult, TRANSFER_SCENARIOS)])
def test_result_codes_every_code_has_a_scenario(enum: type, scenarios: dict[object, object]
                                               ) -> None:
    assert set(scenarios) == set(enum)


def test_result_codes_expiry_is_checked_at_each_event_timestamp() -> None:
    book = _book()
    assert _expired_within_batch(book) == [T.PENDING_TRANSFER_EXPIRED]


def test_result_codes_are_numbered_distinctly() -> None:
    for enum in (AccountResult, TransferResult):
        values = [int(m) for m in enum]
        assert len(set(values)) == len(values) == max(values) + 1


# -- which failures are remembered (id_already_failed) ----------------------------------

BALANCE_OVERFLOWS = [T.OVERFLOWS_DEBITS_PENDING, T.OVERFLOWS_CREDITS_PENDING,
                     T.OVERFLOWS_DEBITS_POSTED, T.OVERFLOWS_CREDITS_POSTED,
                     T.OVERFLOWS_DEBITS, T.OVERFLOWS_CREDITS]


@pytest.mark.parametrize("code", BALANCE_OVERFLOWS, ids=lambda c: c.name.lower())
def test_result_codes_balance_overflows_are_remembered(code: TransferResult) -> None:
    """An overflow depends on the balances at the time: the id is burned."""
    book = _book()
    assert _overflow(code)(book) == [code]
    _, last = _overflow_setup(code)
    assert book.transfers(last) == [T.ID_ALREADY_FAILED]
    assert code in TRANSIENT_FAILURES


def test_result_codes_overflow_never_turns_into_success_once_the_balance_falls() -> None:
    """The reservation that made an event overflow is voided: the retry still fails."""
    book = _book()
    event = xfer(11, 1, 2, 1, flags=TF.PENDING)
    assert book.transfers(xfer(10, 1, 2, MAX, flags=TF.PENDING), event) == [
        0, T.OVERFLOWS_DEBITS_PENDING]
    assert book.transfers(xfer(12, pending_id=10, flags=TF.VOID_PENDING_TRANSFER)) == [0]
    assert book.transfers(event) == [T.ID_ALREADY_FAILED]
    assert book.transfer(11) is None
    assert book.balances(1) == (0, 0, 0, 0)


def test_result_codes_overflows_timeout_is_not_remembered() -> None:
    """overflows_timeout follows from the event and a clock that only moves forward: the
    same event can only fail again, so the id stays free for a corrected timeout."""
    book = _book()
    assert _timeout_overflow(book) == [T.OVERFLOWS_TIMEOUT]
    assert book.transfers(xfer(90, 1, 2, 1, flags=TF.PENDING, timeout=(1 << 32) - 1)) == [
        T.OVERFLOWS_TIMEOUT]
    assert book.transfers(xfer(90, 1, 2, 1, flags=TF.PENDING, timeout=1)) == [0]
    assert T.OVERFLOWS_TIMEOUT not in TRANSIENT_FAILURES


# -- flags out of their 16 bits ---------------------------------------------------------

FLAGS_OUT_OF_RANGE = [-1, -2, 1 << 16, (1 << 16) | 1, (1 << 16) | 0xFF, -(1 << 40) | 1]


@pytest.mark.parametrize("flags", FLAGS_OUT_OF_RANGE)
def test_result_codes_flags_out_of_range_are_field_out_of_range(flags: int) -> None:
    """flags is 16 bits wide: outside that it is out of range, not an unknown flag bit."""
    book = _book()
    assert book.accounts(acct(10, flags=flags)) == [A.FIELD_OUT_OF_RANGE]
    assert book.transfers(xfer(10, 1, 2, 5, flags=flags)) == [T.FIELD_OUT_OF_RANGE]

"""Reads: lookups, an account's paged history by timestamp, totals, invalid requests."""

from __future__ import annotations

import pytest
from ledgerkit import Book, acct, xfer

from cellmesh.ledger import BATCH_MAX, FilterFlags, InvalidQuery, TransferFlags

D, C, R = FilterFlags.DEBITS, FilterFlags.CREDITS, FilterFlags.REVERSED


def _history() -> tuple[Book, list[int]]:
    """Account 1 debited by even transfers 10.., credited by odd ones; 12 in all."""
    book = Book()
    assert book.accounts(acct(1), acct(2), acct(3)) == [0, 0, 0]
    events = [xfer(10 + k, 1, 2, 1) if k % 2 == 0 else xfer(10 + k, 3, 1, 1) for k in range(12)]
    assert book.transfers(*events[:5]) == [0] * 5
    assert book.transfers(*events[5:]) == [0] * 7
    stamps = [t.timestamp for t in book.state.lookup_transfers(list(range(10, 22)))]
    return book, stamps


def test_queries_history_in_timestamp_order_both_ways() -> None:
    book, _ = _history()
    ids = [t.id for t in book.state.get_account_transfers(1)]
    assert ids == list(range(10, 22))
    assert [t.id for t in book.state.get_account_transfers(1, flags=D | C | R)] == ids[::-1]


def test_queries_history_filters_debits_and_credits() -> None:
    book, _ = _history()
    assert [t.id for t in book.state.get_account_transfers(1, flags=D)] == list(range(10, 22, 2))
    assert [t.id for t in book.state.get_account_transfers(1, flags=C)] == list(range(11, 22, 2))
    assert [t.id for t in book.state.get_account_transfers(2, flags=D)] == []


def test_queries_history_pages_by_timestamp() -> None:
    book, stamps = _history()
    seen: list[int] = []
    lo = 0
    while True:
        page = book.state.get_account_transfers(1, timestamp_min=lo, limit=5)
        if not page:
            break
        seen += [t.id for t in page]
        lo = page[-1].timestamp + 1
    assert seen == list(range(10, 22))
    # Reversed pages walk back from the newest with timestamp_max.
    back: list[int] = []
    hi = 0
    while True:
        page = book.state.get_account_transfers(1, timestamp_max=hi, limit=5, flags=D | C | R)
        if not page:
            break
        back += [t.id for t in page]
        hi = page[-1].timestamp - 1
    assert back == list(range(21, 9, -1))
    # Inclusive bounds.
    window = book.state.get_account_transfers(1, timestamp_min=stamps[3], timestamp_max=stamps[6])
    assert [t.id for t in window] == [13, 14, 15, 16]


def test_queries_history_of_an_unknown_account_is_empty() -> None:
    book, _ = _history()
    assert book.state.get_account_transfers(404) == []


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"account_id": 0}, "account_id"),
    ({"account_id": (1 << 128) - 1}, "account_id"),
    ({"timestamp_min": -1}, "timestamp_min"),
    ({"timestamp_max": (1 << 64) - 1}, "timestamp_max"),
    ({"timestamp_min": 10, "timestamp_max": 9}, "timestamp_min"),
    ({"limit": 0}, "limit"),
    ({"limit": BATCH_MAX + 1}, "limit"),
    ({"flags": 8}, "flags"),
    ({"flags": -1}, "flags"),
    ({"flags": int(R)}, "flags"),
])
def test_queries_invalid_filter_names_the_field(kwargs: dict[str, int], field: str) -> None:
    book, _ = _history()
    args = {"account_id": 1, **kwargs}
    with pytest.raises(InvalidQuery) as info:
        book.state.get_account_transfers(args.pop("account_id"), **args)
    assert info.value.field == field
    assert field in str(info.value)


def test_queries_lookups_keep_request_order_and_skip_unknown_ids() -> None:
    book, _ = _history()
    assert [a.id for a in book.state.lookup_accounts([3, 9, 1, 3])] == [3, 1, 3]
    assert [t.id for t in book.state.lookup_transfers([21, 5, 10])] == [21, 10]
    with pytest.raises(InvalidQuery):
        book.state.lookup_accounts(list(range(BATCH_MAX + 1)))
    with pytest.raises(InvalidQuery):
        book.state.lookup_transfers(list(range(BATCH_MAX + 1)))


def test_queries_totals_per_ledger() -> None:
    book = Book()
    assert book.accounts(acct(1), acct(2), acct(3, ledger=7), acct(4, ledger=7)) == [0] * 4
    assert book.transfers(xfer(10, 1, 2, 5), xfer(11, 3, 4, 9, ledger=7,
                                                  flags=TransferFlags.PENDING)) == [0, 0]
    one, seven = book.state.totals()
    assert (one.ledger, one.accounts, one.debits_posted, one.credits_posted) == (1, 2, 5, 5)
    assert (seven.ledger, seven.debits_pending, seven.credits_pending) == (7, 9, 9)
    assert one.balanced and seven.balanced

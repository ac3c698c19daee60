"""The state-machine contract: apply(command, meta) -> reply, timestamps, rejections, wire."""

from __future__ import annotations

import pytest
from ledgerkit import EPOCH, SECOND, Book, acct, xfer

from cellmesh.ledger import (
    BATCH_MAX,
    Account,
    AccountsReply,
    ApplyMeta,
    CreateAccounts,
    CreateTransfers,
    CreateTransfersReply,
    GetAccountTransfers,
    GetTotals,
    InvalidQuery,
    LedgerState,
    LookupAccounts,
    LookupPending,
    LookupTransfers,
    PendingReply,
    Pulse,
    Rejected,
    TotalsReply,
    Transfer,
    TransferFlags,
    TransfersReply,
)
from cellmesh.wire.proteins import PROTEINS, DecodeContext, EncodeContext, encode_body

BIG = (1 << 128) - 2  # the largest valid id


def test_apply_each_event_gets_its_own_timestamp() -> None:
    book = Book()
    assert book.accounts(acct(1), acct(2), acct(3), at=EPOCH) == [0, 0, 0]
    assert [a.timestamp for a in book.state.lookup_accounts([1, 2, 3])] == [
        EPOCH, EPOCH + 1, EPOCH + 2]
    reply = book.state.apply(CreateTransfers(events=[xfer(10, 1, 2, 1), xfer(11, 1, 2, 1)]),
                             ApplyMeta(index=2, timestamp=EPOCH + 5 * SECOND))
    assert isinstance(reply, CreateTransfersReply)
    assert reply.timestamp == EPOCH + 5 * SECOND
    assert [t.timestamp for t in book.state.lookup_transfers([10, 11])] == [
        reply.timestamp, reply.timestamp + 1]


def test_apply_timestamps_increase_even_if_the_leader_clock_does_not() -> None:
    state = LedgerState()
    first = state.apply(CreateAccounts(events=[acct(1), acct(2)]),
                        ApplyMeta(index=1, timestamp=EPOCH))
    # The same timestamp again, then an earlier one: events still move forward.
    again = state.apply(CreateAccounts(events=[acct(3)]), ApplyMeta(index=2, timestamp=EPOCH))
    back = state.apply(CreateAccounts(events=[acct(4)]), ApplyMeta(index=3, timestamp=5))
    assert (first.timestamp, again.timestamp, back.timestamp) == (  # type: ignore[union-attr]
        EPOCH, EPOCH + 2, EPOCH + 3)
    assert state.clock == EPOCH + 3
    assert state.applied_index == 3


def test_apply_records_the_applied_index() -> None:
    state = LedgerState()
    assert state.applied_index == 0
    state.apply(Pulse(), ApplyMeta(index=41, timestamp=EPOCH))
    assert state.applied_index == 41


def test_apply_rejects_too_many_events_without_changing_anything() -> None:
    book = Book()
    assert book.accounts(acct(1)) == [0]
    before = book.state.snapshot()
    too_many = CreateAccounts(events=[acct(10 + i) for i in range(BATCH_MAX + 1)])
    reply = book.state.apply(too_many, ApplyMeta(index=1, timestamp=EPOCH + 99 * SECOND))
    assert isinstance(reply, Rejected) and reply.reason == "too_many_events"
    assert str(BATCH_MAX) in reply.detail
    assert book.state.snapshot() == before  # the index did not move either (it was 1)


def test_apply_rejects_what_is_not_a_ledger_command() -> None:
    state = LedgerState()
    reply = state.apply(LookupAccounts(ids=[1]), ApplyMeta(index=1, timestamp=EPOCH))
    assert isinstance(reply, Rejected) and reply.reason == "unknown_command"
    assert "LookupAccounts" in reply.detail
    assert state.clock == 0


def test_apply_rejects_a_clock_past_2_63() -> None:
    state = LedgerState()
    reply = state.apply(CreateAccounts(events=[acct(1), acct(2)]),
                        ApplyMeta(index=1, timestamp=(1 << 63) - 1))
    assert isinstance(reply, Rejected) and reply.reason == "clock_exhausted"
    assert isinstance(state.apply(Pulse(), ApplyMeta(index=2, timestamp=1 << 63)), Rejected)
    assert state.lookup_accounts([1]) == [] and state.clock == 0


def test_apply_a_full_batch_of_transfers_in_one_command() -> None:
    book = Book()
    assert book.accounts(*(acct(i) for i in range(1, 1001))) == [0] * 1000
    events = [xfer(BIG - k, 1 + k % 1000, 1 + (k + 7) % 1000, 1 + k % 13)
              for k in range(BATCH_MAX)]
    assert book.transfers(*events) == [0] * BATCH_MAX
    (total,) = book.state.totals()
    assert total.balanced and total.debits_posted == sum(1 + k % 13 for k in range(BATCH_MAX))
    assert book.transfer(BIG) is not None and book.transfer(BIG).id == BIG  # type: ignore[union-attr]


def test_apply_enum_members_are_stored_as_plain_ints() -> None:
    book = Book()
    assert book.accounts(acct(1), acct(2)) == [0, 0]
    assert book.transfers(xfer(10, 1, 2, 5, flags=TransferFlags.PENDING)) == [0]
    stored = book.transfer(10)
    assert stored is not None and type(stored.flags) is int
    encode_body(stored, EncodeContext())  # encodes: no enum member left inside


def test_apply_is_deterministic_across_replicas() -> None:
    commands = [
        CreateAccounts(events=[acct(i) for i in range(1, 20)]),
        CreateTransfers(events=[xfer(100 + i, 1 + i % 19, 1 + (i + 3) % 19, i,
                                     flags=TransferFlags.PENDING if i % 3 else 0,
                                     timeout=i % 4 if i % 3 else 0) for i in range(300)]),
        Pulse(),
        CreateTransfers(events=[xfer(1000 + i, pending_id=100 + i,
                                     flags=TransferFlags.POST_PENDING_TRANSFER, amount=i // 2)
                                for i in range(300)]),
    ]
    replicas = [LedgerState(), LedgerState()]
    replies = [[r.apply(c, ApplyMeta(index=i, timestamp=EPOCH + i * SECOND))
                for i, c in enumerate(commands, 1)] for r in replicas]
    assert replies[0] == replies[1]
    assert replicas[0].snapshot() == replicas[1].snapshot()


def _wire(value: object) -> object:
    """Encode a protein as the wire does and decode it back."""
    return PROTEINS.decode(encode_body(value, EncodeContext()), DecodeContext())


def test_apply_commands_and_replies_cross_the_wire_with_128_bit_values() -> None:
    book = Book()
    command = CreateAccounts(events=[acct(BIG, user_data_128=BIG), acct(BIG - 1)])
    assert _wire(command) == command
    reply = book.state.apply(_wire(command), ApplyMeta(index=1, timestamp=EPOCH))
    assert _wire(reply) == reply
    transfers = CreateTransfers(events=[xfer(BIG, BIG, BIG - 1, (1 << 128) - 1)])
    moved = book.state.apply(_wire(transfers), ApplyMeta(index=2, timestamp=EPOCH + 1))
    assert isinstance(moved, CreateTransfersReply) and moved.results == [0]
    for query in (LookupAccounts(ids=[BIG]), LookupTransfers(ids=[BIG]),
                  GetAccountTransfers(account_id=BIG), LookupPending(ids=[BIG]), GetTotals()):
        answer = book.state.query(_wire(query))
        assert _wire(answer) == answer
    (looked,) = book.state.lookup_accounts([BIG])
    assert looked.credits_posted == 0 and looked.debits_posted == (1 << 128) - 1


def test_apply_query_dispatches_every_read() -> None:
    book = Book()
    assert book.accounts(acct(1), acct(2)) == [0, 0]
    assert book.transfers(xfer(10, 1, 2, 5, flags=TransferFlags.PENDING)) == [0]
    state = book.state
    accounts = state.query(LookupAccounts(ids=[2, 404, 1]))
    assert isinstance(accounts, AccountsReply) and [a.id for a in accounts.accounts] == [2, 1]
    transfers = state.query(LookupTransfers(ids=[10, 11]))
    assert isinstance(transfers, TransfersReply) and [t.id for t in transfers.transfers] == [10]
    page = state.query(GetAccountTransfers(account_id=1))
    assert isinstance(page, TransfersReply) and len(page.transfers) == 1
    statuses = state.query(LookupPending(ids=[10, 11]))
    assert isinstance(statuses, PendingReply) and statuses.statuses == [1, 0]
    totals = state.query(GetTotals())
    assert isinstance(totals, TotalsReply) and totals.balanced
    assert totals.applied_index == state.applied_index and totals.timestamp == state.clock
    with pytest.raises(InvalidQuery) as info:
        state.query(Pulse())
    assert info.value.field == "query"


def test_apply_reads_never_change_the_state() -> None:
    book = Book()
    assert book.accounts(acct(1), acct(2)) == [0, 0]
    assert book.transfers(xfer(10, 1, 2, 5, flags=TransferFlags.PENDING, timeout=1)) == [0]
    before = book.state.snapshot()
    book.advance(60)  # the pending transfer is due, but only a write expires it
    for query in (LookupAccounts(ids=[1]), LookupTransfers(ids=[10]), GetTotals(),
                  GetAccountTransfers(account_id=1), LookupPending(ids=[10])):
        book.state.query(query)
    book.state.next_expiry()
    assert book.state.snapshot() == before


def test_apply_records_are_immutable_values() -> None:
    book = Book()
    assert book.accounts(acct(1), acct(2)) == [0, 0]
    assert book.transfers(xfer(10, 1, 2, 5)) == [0]
    (account,) = book.state.lookup_accounts([1])
    assert isinstance(account, Account)
    with pytest.raises(AttributeError):
        account.debits_posted = 0  # type: ignore[misc]
    assert isinstance(book.transfer(10), Transfer)


def test_apply_public_names_are_exported_once() -> None:
    from cellmesh import ledger

    names = ledger.__all__
    assert len(set(names)) == len(names)
    assert [n for n in names if not hasattr(ledger, n)] == []

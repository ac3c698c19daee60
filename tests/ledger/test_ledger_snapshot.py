"""Snapshots: byte-identical round trips, snapshot + rest of log == full replay, hostile bytes."""

from __future__ import annotations

import hashlib

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledgerkit import EPOCH, SECOND, Book, acct, xfer

from cellmesh.ledger import (
    Account,
    ApplyMeta,
    CreateAccounts,
    CreateTransfers,
    LedgerState,
    Pulse,
    SnapshotError,
    Transfer,
    TransferFlags,
    TransferResult,
)
from cellmesh.ledger.proteins import Reply
from cellmesh.ledger.snapshot import MAGIC

PEND = int(TransferFlags.PENDING)

accounts_cmd = st.builds(
    lambda ids, flags: CreateAccounts(events=[Account(id=i, ledger=1, code=1, flags=f)
                                              for i, f in zip(ids, flags, strict=False)]),
    st.lists(st.integers(min_value=1, max_value=8), max_size=4),
    st.lists(st.sampled_from([0, 1, 2, 4, 8]), min_size=4, max_size=4),
)
transfer = st.builds(
    Transfer,
    id=st.integers(min_value=1, max_value=60),
    debit_account_id=st.integers(min_value=0, max_value=8),
    credit_account_id=st.integers(min_value=0, max_value=8),
    amount=st.integers(min_value=0, max_value=50),
    pending_id=st.sampled_from([0, 0, 0, *range(1, 60)]),
    flags=st.sampled_from([0, 0, 1, 2, 2, 3, 4, 8, 4 | 1, 16, 2 | 64, 2 | 128]),
    timeout=st.sampled_from([0, 0, 1, 2]),
    ledger=st.sampled_from([1, 1, 1, 0]),
    code=st.just(1),
)
command = st.one_of(
    accounts_cmd,
    st.builds(lambda evs: CreateTransfers(events=evs), st.lists(transfer, max_size=8)),
    st.just(Pulse()),
)


def _replay(commands: list[object], start: int = 0, state: LedgerState | None = None
            ) -> tuple[LedgerState, list[Reply]]:
    state = state if state is not None else LedgerState()
    replies = [state.apply(c, ApplyMeta(index=start + i + 1,
                                        timestamp=EPOCH + (start + i) * SECOND))
               for i, c in enumerate(commands)]
    return state, replies


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands=st.lists(command, max_size=25), data=st.data())
def test_snapshot_restored_plus_rest_of_log_equals_full_replay(
    commands: list[object], data: st.DataObject,
) -> None:
    cut = data.draw(st.integers(min_value=0, max_value=len(commands)))
    full, full_replies = _replay(commands)
    head, _ = _replay(commands[:cut])
    image = head.snapshot()
    restored = LedgerState.from_snapshot(image)
    assert restored.snapshot() == image
    assert restored.applied_index == head.applied_index == cut
    _, rest_replies = _replay(commands[cut:], start=cut, state=restored)
    assert rest_replies == full_replies[cut:]
    assert restored.snapshot() == full.snapshot()


def test_snapshot_round_trip_is_byte_identical() -> None:
    book = Book()
    assert book.accounts(acct(1), acct(2, flags=2), acct(3, flags=8),
                         acct((1 << 128) - 2, user_data_128=(1 << 128) - 1)) == [0] * 4
    assert book.transfers(xfer(10, 1, 2, 500), xfer(11, 2, 1, 20, flags=PEND, timeout=9),
                          xfer(12, 1, 2, 5, flags=PEND), xfer(13, 2, 99, 1)) == [
        0, 0, 0, TransferResult.CREDIT_ACCOUNT_NOT_FOUND]
    assert book.transfers(xfer(14, pending_id=12, flags=TransferFlags.VOID_PENDING_TRANSFER)
                          ) == [0]
    image = book.state.snapshot()
    assert image.startswith(MAGIC)
    restored = LedgerState.from_snapshot(image)
    assert restored.snapshot() == image
    assert restored.next_expiry() == book.state.next_expiry()
    assert restored.get_account_transfers(1) == book.state.get_account_transfers(1)
    assert restored.clock == book.state.clock
    # The failed id (13: credit account not found) is remembered across the restore.
    book.state = restored
    assert book.transfers(xfer(13, 2, 1, 1)) == [TransferResult.ID_ALREADY_FAILED]


def _one_call_image(state: LedgerState) -> bytes:
    """The format's body written with one ``cbor2.dumps`` (the module doc's layout)."""
    store = state._store
    accounts = sorted(store.accounts.values(), key=lambda a: a.timestamp)
    body = cbor2.dumps([
        store.clock, store.applied_index,
        [[a.id, a.dp, a.dpo, a.cp, a.cpo, a.ud128, a.ud64, a.ud32, a.ledger, a.code, a.flags,
          a.timestamp, int(a.closed)] for a in accounts],
        sorted(store.transfers.values(), key=lambda r: r[12]),
        sorted([tid, status] for tid, status in store.pending.items()),
        sorted(store.failed),
    ])
    return MAGIC + hashlib.sha256(body).digest() + body


def test_snapshot_built_in_chunks_is_the_one_call_encoding_and_ignores_later_writes() -> None:
    """``snapshot_job`` captures now and encodes later, 4096 rows per cbor2 call
    (so a worker thread can build it while the ledger applies): the bytes are those
    of the whole body in one call, at the moment of the capture."""
    book = Book()
    n_accounts = 30
    assert book.accounts(*[acct(i) for i in range(1, n_accounts + 1)]) == [0] * n_accounts
    events = [xfer(1000 + k, 1 + k % n_accounts, 1 + (k + 1) % n_accounts, 1 + k % 7,
                   flags=PEND if k % 5 == 0 else 0, timeout=k % 3 if k % 5 == 0 else 0)
              for k in range(8190)]
    assert book.transfers(*events) == [0] * 8190
    assert book.transfers(xfer(99, 1, 10**6, 1)) == [TransferResult.CREDIT_ACCOUNT_NOT_FOUND]
    image = _one_call_image(book.state)
    job = book.state.snapshot_job()
    # writes after the capture change balances, tables and the clock ...
    assert book.transfers(*[xfer(20_000 + k, 2, 3, 1) for k in range(5000)]) == [0] * 5000
    assert book.transfers(xfer(98, 1, 10**6, 1)) == [TransferResult.CREDIT_ACCOUNT_NOT_FOUND]
    # ... and the build still gives the state of the capture, byte for byte
    assert job() == image
    assert LedgerState.from_snapshot(image).snapshot() == image
    assert book.state.snapshot() == _one_call_image(book.state) != image


def test_snapshot_of_an_empty_ledger_restores() -> None:
    image = LedgerState().snapshot()
    assert LedgerState.from_snapshot(image).snapshot() == image


def _wrap(body: bytes) -> bytes:
    """A snapshot frame with a valid header and digest around ``body``."""
    return MAGIC + hashlib.sha256(body).digest() + body


def test_snapshot_damage_is_refused_and_the_state_kept() -> None:
    book = Book()
    assert book.accounts(acct(1), acct(2)) == [0, 0]
    assert book.transfers(xfer(10, 1, 2, 5)) == [0]
    image = book.state.snapshot()
    flipped = bytearray(image)
    flipped[-3] ^= 0x40
    with pytest.raises(SnapshotError, match="checksum"):
        book.state.restore(bytes(flipped))
    with pytest.raises(SnapshotError, match="header"):
        book.state.restore(b"CMLEDGR\x02" + image[8:])
    with pytest.raises(SnapshotError, match="header"):
        book.state.restore(image[:20])
    assert book.state.snapshot() == image  # untouched by the failed restores


@pytest.mark.parametrize(("body", "problem"), [
    ([0, 0, [], [], []], "6 parts"),
    ([-1, 0, [], [], [], []], "clock"),
    ([0, 0, [[1] * 12], [], [], []], "accounts[0]"),
    ([0, 0, [[1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 1, 0]] * 2, [], [], []], "twice"),
    ([0, 0, [], [[10, 1, 2, 5, 0, 0, 0, 0, 0, 1, 1, 0, 1]], [], []], "account"),
    ([0, 0, [[1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 1, 0], [2, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 2, 0]],
      [[10, 1, 2, 5, 0, 0, 0, 0, 0, 1, 1, 2, 3]], [], []], "pending transfer 10 has no"),
    ([0, 0, [[1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 1, 0], [2, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 2, 0]],
      [], [[10, 1]], []], "pending entry 10"),
    ([0, 0, [], [], [], ["x"]], "failed"),
    ([0, 0, [[1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 1, True]], [], [], []], "accounts[0][12]"),
])
def test_snapshot_malformed_bodies_name_the_problem(body: object, problem: str) -> None:
    with pytest.raises(SnapshotError) as info:
        LedgerState.from_snapshot(_wrap(cbor2.dumps(body)))
    assert problem in str(info.value)


cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(1 << 130), max_value=1 << 130)
    | st.binary(max_size=8) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=3), inner,
                                                                max_size=3),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(blob=st.binary(max_size=200))
def test_snapshot_fuzz_garbage_bytes_raise_only_snapshot_error(blob: bytes) -> None:
    for data in (blob, MAGIC + blob, _wrap(blob)):
        with pytest.raises(SnapshotError):
            LedgerState.from_snapshot(data)


@settings(max_examples=300, deadline=None)
@given(body=cbor_values)
def test_snapshot_fuzz_well_framed_garbage_raises_only_snapshot_error(body: object) -> None:
    try:
        state = LedgerState.from_snapshot(_wrap(cbor2.dumps(body)))
    except SnapshotError:
        return
    # Whatever was accepted is a usable ledger: it snapshots and answers.
    state.snapshot()
    state.totals()


def test_snapshot_balances_must_agree_with_the_transfers() -> None:
    account = [1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 1, 0]
    other = [2, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 2, 0]
    rich = [1, 0, 7, 0, 0, 0, 0, 0, 1, 1, 0, 1, 0]  # debits_posted 7 from no transfer
    with pytest.raises(SnapshotError, match="account 1's balances"):
        LedgerState.from_snapshot(_wrap(cbor2.dumps([0, 0, [rich, other], [], [], []])))
    post = [11, 1, 2, 5, 10, 0, 0, 0, 0, 1, 1, int(TransferFlags.POST_PENDING_TRANSFER), 4]
    pend = [10, 1, 2, 5, 0, 0, 0, 0, 0, 1, 1, PEND, 3]
    with pytest.raises(SnapshotError, match="whose status disagrees"):
        LedgerState.from_snapshot(_wrap(cbor2.dumps(
            [0, 0, [account, other], [pend, post], [[10, 3]], []])))

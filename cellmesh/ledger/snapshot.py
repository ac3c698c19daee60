"""Snapshots: the whole ledger as canonical bytes, and back.

Format (version 1)::

    b"CMLEDGR\\x01"  (8 bytes: magic and version)
    SHA-256 of the body (32 bytes)
    body: one CBOR array
      [clock, applied_index,
       accounts:  [[id, dp, dpo, cp, cpo, ud128, ud64, ud32, ledger, code, flags,
                    timestamp, closed], ...]            by timestamp
       transfers: [[13 fields in Transfer order], ...]  by timestamp
       pending:   [[id, status], ...]                   by id
       failed:    [id, ...]]                            ascending

Canonical: two ledgers that answer every query alike and hold the same
clock and index encode to the same bytes, whatever path led there (chains
rolled back, expiry entries since resolved). ``decode(encode(s))`` then
``encode`` gives the same bytes again. The per-account histories and the
expiry heap are not stored; they are rebuilt from the transfers.

:func:`decode` checks the digest, the shape and width of every value and
every reference (a transfer's accounts, a pending entry's transfer), then
recomputes every balance and ``closed`` bit from the transfers and compares;
it raises only :class:`~cellmesh.ledger.errors.SnapshotError`.

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable
from typing import Any, Final

import cbor2

from ._store import (
    T_AMOUNT,
    T_CREDIT,
    T_DEBIT,
    T_FLAGS,
    T_ID,
    T_PENDING_ID,
    T_TIMEOUT,
    T_TIMESTAMP,
    TRANSFER_FIELDS,
    Acct,
    Record,
    Store,
    expires_at,
)
from .codes import (
    U16_MAX,
    U32_MAX,
    U64_MAX,
    U128_MAX,
    AccountFlags,
    PendingStatus,
    TransferFlags,
)
from .errors import SnapshotError

MAGIC: Final = b"CMLEDGR\x01"
_DIGEST: Final = 32
_ACCOUNT_FIELDS: Final = 13
#: Width of each account row field, then of each transfer record field.
_ACCOUNT_WIDTHS: Final = (U128_MAX,) * 6 + (U64_MAX, U32_MAX, U32_MAX, U16_MAX, U16_MAX,
                                            U64_MAX, 1)
_TRANSFER_WIDTHS: Final = (U128_MAX,) * 6 + (U64_MAX, U32_MAX, U32_MAX, U32_MAX, U16_MAX,
                                             U16_MAX, U64_MAX)
_STATUSES: Final = frozenset(int(s) for s in PendingStatus)
_PENDING_FLAG: Final = int(TransferFlags.PENDING)
_POST: Final = int(TransferFlags.POST_PENDING_TRANSFER)
_RESOLVE: Final = _POST | int(TransferFlags.VOID_PENDING_TRANSFER)
_CLOSING_DEBIT: Final = int(TransferFlags.CLOSING_DEBIT)
_CLOSING_CREDIT: Final = int(TransferFlags.CLOSING_CREDIT)
_CLOSED_FLAG: Final = int(AccountFlags.CLOSED)


def encode(store: Store) -> bytes:
    """The canonical snapshot bytes of ``store``."""
    return encoder(store)()


#: Rows per ``cbor2.dumps`` call when a table is encoded: each call holds the
#: GIL for its whole length, so a worker thread building a snapshot lets the
#: event loop run between chunks.
_CHUNK_ROWS: Final = 4096


def encoder(store: Store) -> Callable[[], bytes]:
    """Capture ``store`` now; the function returned encodes it (:func:`encode`'s bytes).

    The capture copies what later writes change -- the account rows, the
    pending and failed tables, the list of transfer records (records are
    tuples, never changed once stored) -- so the function may run in a
    worker thread while the ledger goes on applying. It sorts and encodes
    the copies in chunks of :data:`_CHUNK_ROWS` rows.
    """
    clock, index = store.clock, store.applied_index
    accounts = [[a.id, a.dp, a.dpo, a.cp, a.cpo, a.ud128, a.ud64, a.ud32, a.ledger, a.code,
                 a.flags, a.timestamp, int(a.closed)] for a in store.accounts.values()]
    transfers = list(store.transfers.values())
    pending = list(store.pending.items())
    failed = list(store.failed)

    def build() -> bytes:
        accounts.sort(key=lambda row: row[11])  # by timestamp
        transfers.sort(key=lambda r: r[T_TIMESTAMP])
        pending_rows = sorted([tid, status] for tid, status in pending)
        failed.sort()
        parts = [_array_head(6), cbor2.dumps(clock), cbor2.dumps(index)]
        for table in (accounts, transfers, pending_rows, failed):
            parts.append(_array_head(len(table)))
            for at in range(0, len(table), _CHUNK_ROWS):
                chunk = table[at:at + _CHUNK_ROWS]
                parts.append(cbor2.dumps(chunk)[len(_array_head(len(chunk))):])
        body = b"".join(parts)
        return MAGIC + hashlib.sha256(body).digest() + body

    return build


def _array_head(count: int) -> bytes:
    """The CBOR head of an array of ``count`` items (major type 4, shortest form)."""
    if count < 24:
        return bytes([0x80 + count])
    for extra, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if count < 1 << (8 * width):
            return bytes([0x80 + extra]) + count.to_bytes(width, "big")
    raise ValueError(f"an array of {count} items does not fit CBOR")


def _rows(value: Any, name: str, width: int, limits: tuple[int, ...]) -> list[list[int]]:
    """``value`` if it is a list of ``width``-int rows within ``limits``, else SnapshotError.

    The check runs column by column at C speed; only a failing table is
    scanned row by row, to name the first bad value.
    """
    if type(value) is not list:
        raise SnapshotError(f"{name} is not an array")
    if not value:
        return value
    if set(map(type, value)) == {list} and set(map(len, value)) == {width}:
        columns = list(zip(*value, strict=True))
        if all(set(map(type, col)) == {int} and min(col) >= 0 and max(col) <= top
               for col, top in zip(columns, limits, strict=True)):
            return value
    for n, row in enumerate(value):
        if type(row) is not list or len(row) != width:
            raise SnapshotError(f"{name}[{n}] is not an array of {width} values")
        for field, (v, top) in enumerate(zip(row, limits, strict=True)):
            if type(v) is not int or not 0 <= v <= top:
                raise SnapshotError(f"{name}[{n}][{field}] is not an int in 0..{top}")
    raise AssertionError("unreachable: a failing table has a failing row")


def decode(data: bytes) -> Store:
    """Rebuild a store from :func:`encode` output (SnapshotError if it is not one)."""
    data = bytes(data)
    if len(data) < len(MAGIC) + _DIGEST or not data.startswith(MAGIC):
        raise SnapshotError("no ledger snapshot header (version 1)")
    digest, body = data[len(MAGIC):len(MAGIC) + _DIGEST], data[len(MAGIC) + _DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise SnapshotError("checksum mismatch: the snapshot is damaged")
    try:
        top = cbor2.loads(body)
    except Exception as exc:  # cbor2 raises several types on bad input
        raise SnapshotError(f"undecodable body ({type(exc).__name__})") from None
    if type(top) is not list or len(top) != 6:
        raise SnapshotError("the body is not an array of 6 parts")
    clock, applied_index, account_rows, transfer_rows, pending_rows, failed = top
    for name, v in (("clock", clock), ("applied_index", applied_index)):
        if type(v) is not int or not 0 <= v <= U64_MAX:
            raise SnapshotError(f"{name} is not an int in 0..2**64-1")
    store = Store()
    store.clock, store.applied_index = clock, applied_index
    for row in _rows(account_rows, "accounts", _ACCOUNT_FIELDS, _ACCOUNT_WIDTHS):
        aid, dp, dpo, cp, cpo, ud128, ud64, ud32, ledger, code, flags, ts, closed = row
        if aid in store.accounts:
            raise SnapshotError(f"account {aid} appears twice")
        a = Acct(aid, ud128, ud64, ud32, ledger, code, flags, ts, bool(closed))
        a.dp, a.dpo, a.cp, a.cpo = dp, dpo, cp, cpo
        store.accounts[aid] = a
    accounts = store.accounts
    previous = -1
    for row in _rows(transfer_rows, "transfers", TRANSFER_FIELDS, _TRANSFER_WIDTHS):
        record: Record = tuple(row)  # type: ignore[assignment]
        tid = record[T_ID]
        if record[T_TIMESTAMP] <= previous:
            raise SnapshotError(f"transfer {tid} is out of timestamp order")
        previous = record[T_TIMESTAMP]
        if record[T_PENDING_ID] and record[T_PENDING_ID] not in store.transfers:
            raise SnapshotError(f"transfer {tid} resolves a transfer not before it")
        debit, credit = accounts.get(record[T_DEBIT]), accounts.get(record[T_CREDIT])
        if debit is None or credit is None:
            raise SnapshotError(f"transfer {tid} names an account that is not in the snapshot")
        if tid in store.transfers:
            raise SnapshotError(f"transfer {tid} appears twice")
        store.transfers[tid] = record
        debit.txs.append(record)
        credit.txs.append(record)
    for tid, status in _rows(pending_rows, "pending", 2, (U128_MAX, max(_STATUSES))):
        record = store.transfers.get(tid)  # type: ignore[assignment]
        if record is None or not record[T_FLAGS] & _PENDING_FLAG or status not in _STATUSES:
            raise SnapshotError(f"pending entry {tid} is not a pending transfer with a status")
        store.pending[tid] = status
        if status == PendingStatus.PENDING and record[T_TIMEOUT]:
            store.expiry.append((expires_at(record), record[T_TIMESTAMP], tid))
    heapq.heapify(store.expiry)
    for tid, record in store.transfers.items():
        if record[T_FLAGS] & _PENDING_FLAG and tid not in store.pending:
            raise SnapshotError(f"pending transfer {tid} has no status")
    if type(failed) is not list or any(type(v) is not int or not 0 <= v <= U128_MAX
                                       for v in failed):
        raise SnapshotError("failed is not an array of ids")
    store.failed = set(failed)
    _verify(store)
    return store


def _verify(store: Store) -> None:
    """Every balance and ``closed`` bit is what the transfers say (SnapshotError if not).

    A damaged snapshot fails its digest; this catches one that was built
    wrong, so a restored ledger always balances.
    """
    sums = {aid: [0, 0, 0, 0, bool(a.flags & _CLOSED_FLAG)]
            for aid, a in store.accounts.items()}
    pending = store.pending
    for record in store.transfers.values():
        flags, amount = record[T_FLAGS], record[T_AMOUNT]
        debit, credit = sums[record[T_DEBIT]], sums[record[T_CREDIT]]
        if flags & _PENDING_FLAG:
            if pending[record[T_ID]] == PendingStatus.PENDING:
                debit[0] += amount
                credit[2] += amount
                if flags & _CLOSING_DEBIT:
                    debit[4] = True
                if flags & _CLOSING_CREDIT:
                    credit[4] = True
        elif flags & _RESOLVE:
            want = PendingStatus.POSTED if flags & _POST else PendingStatus.VOIDED
            if pending.get(record[T_PENDING_ID]) != want:
                raise SnapshotError(f"transfer {record[T_ID]} resolves pending transfer "
                                    f"{record[T_PENDING_ID]}, whose status disagrees")
            if flags & _POST:
                debit[1] += amount
                credit[3] += amount
        else:
            debit[1] += amount
            credit[3] += amount
    for aid, a in store.accounts.items():
        if sums[aid] != [a.dp, a.dpo, a.cp, a.cpo, a.closed]:
            raise SnapshotError(f"account {aid}'s balances disagree with its transfers")

"""create_transfers: validate and apply transfer events (the hot path).

Theory of operation
-------------------
:func:`transfer_engine` returns, for :func:`~cellmesh.ledger._batch.run_batch`,
``checked(event, timestamp, undo) -> code`` (one event, every check in
order; chains use it) and ``bulk`` (stretches of unlinked events). The checks
run in the order of the result codes (docs/ledger.md, "create_transfers
results"): field ranges and the timestamp, the id, ``exists*`` against a
stored transfer with that id, ``id_already_failed``, then one of two paths:

* a *single-phase* or *pending* transfer: account ids, ``pending_id``,
  timeout and closing rules, ledger and code, both accounts found and on the
  transfer's ledger, neither closed, the balancing amount, overflows, then
  the balance limits; on success the balances move (posted, or pending with
  an expiry pushed when ``timeout`` is set);
* a *post* or *void* of a pending transfer (``_resolve``): ``pending_id``,
  then the pending transfer: found, pending, same accounts/ledger/code where
  given, the amount, not already resolved or expired; posting also needs
  both accounts open (so a closing transfer can only be voided or expire,
  as in TigerBeetle) and no overflow. Zero fields inherit the pending
  transfer's values in the stored record.

Nothing is written before every check has passed, so a failed event changes
nothing; inside a chain, writes are recorded in the ``Undo`` first.

Performance: ``bulk`` proves the common case -- a plain transfer, every
field in range, a new id, both accounts found, open and on its ledger, no
overflow -- with one chain of cheap tests and applies it inline (no call per
event); anything else falls back to ``checked``, so both give the same
result by construction. Events are read once into locals, one shift chain
covers every field width, records are tuples, results default to ``ok``
and only failures are written. Pure: no I/O.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Any, Final

from ._batch import Bulk, OneEvent
from ._store import (
    T_AMOUNT,
    T_CODE,
    T_CREDIT,
    T_DEBIT,
    T_FLAGS,
    T_LEDGER,
    T_PENDING_ID,
    T_TIMEOUT,
    T_TIMESTAMP,
    T_USER_DATA_32,
    T_USER_DATA_64,
    T_USER_DATA_128,
    Record,
    Store,
    Undo,
    expire_due,
)
from .codes import (
    NS_PER_SECOND,
    TIMESTAMP_LIMIT,
    TRANSFER_FLAGS_KNOWN,
    TRANSIENT_FAILURES,
    U128_MAX,
    PendingStatus,
    TransferFlags,
    TransferResult,
)

R = TransferResult
_LINKED: Final = int(TransferFlags.LINKED)
_PENDING: Final = int(TransferFlags.PENDING)
_POST: Final = int(TransferFlags.POST_PENDING_TRANSFER)
_VOID: Final = int(TransferFlags.VOID_PENDING_TRANSFER)
_BAL_DEBIT: Final = int(TransferFlags.BALANCING_DEBIT)
_BAL_CREDIT: Final = int(TransferFlags.BALANCING_CREDIT)
_CLOSE_DEBIT: Final = int(TransferFlags.CLOSING_DEBIT)
_CLOSE_CREDIT: Final = int(TransferFlags.CLOSING_CREDIT)
_RESOLVE: Final = _POST | _VOID
_BALANCING: Final = _BAL_DEBIT | _BAL_CREDIT
_CLOSING: Final = _CLOSE_DEBIT | _CLOSE_CREDIT
_NOT_WITH_RESOLVE: Final = _PENDING | _BALANCING | _CLOSING
_UNKNOWN_FLAGS: Final = ~TRANSFER_FLAGS_KNOWN
_NEVER: Final = 1 << 64  # "no expiry due": later than any timestamp
_EXCEEDS_CREDITS: Final = int(TransferResult.EXCEEDS_CREDITS)
_EXCEEDS_DEBITS: Final = int(TransferResult.EXCEEDS_DEBITS)
_TRANSIENT: Final = frozenset(int(code) for code in TRANSIENT_FAILURES)
_DMNEC: Final = 1 << 1  # AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
_CMNED: Final = 1 << 2  # AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS
_ST_PENDING: Final = int(PendingStatus.PENDING)
_ST_POSTED: Final = int(PendingStatus.POSTED)
_ST_VOIDED: Final = int(PendingStatus.VOIDED)
_ST_EXPIRED: Final = int(PendingStatus.EXPIRED)


def _out_of_range(event: Any) -> bool:
    """True if a field -- ``flags`` (16 bits) included -- is negative or wider than its type."""
    wide = (event.id, event.debit_account_id, event.credit_account_id, event.amount,
            event.pending_id, event.user_data_128)
    if any(v < 0 or v >> 128 for v in wide):
        return True
    if any(v < 0 or v >> 64 for v in (event.user_data_64, event.timestamp)):
        return True
    if any(v < 0 or v >> 32 for v in (event.user_data_32, event.timeout, event.ledger)):
        return True
    return any(v < 0 or v >> 16 for v in (event.code, event.flags))


def _plain(record: Record) -> Record:
    """The record with every value a plain int (callers may pass IntFlag/IntEnum members)."""
    return tuple(map(int, record))  # type: ignore[return-value]


def _exists(event: Any, record: Record, store: Store) -> int:
    """The result for an event whose id is taken by ``record``: which field differs, or exists."""
    flags = event.flags
    if flags != record[T_FLAGS]:
        return R.EXISTS_WITH_DIFFERENT_FLAGS
    if event.pending_id != record[T_PENDING_ID]:
        return R.EXISTS_WITH_DIFFERENT_PENDING_ID
    if event.timeout != record[T_TIMEOUT]:
        return R.EXISTS_WITH_DIFFERENT_TIMEOUT
    resolve = flags & _RESOLVE
    # A post/void event's zero fields stand for the pending transfer's values.
    debit = event.debit_account_id
    if debit != record[T_DEBIT] and (debit or not resolve):
        return R.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID
    credit = event.credit_account_id
    if credit != record[T_CREDIT] and (credit or not resolve):
        return R.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID
    amount, stored = event.amount, record[T_AMOUNT]
    if flags & _POST:
        # AMOUNT_MAX means "all of it": it matches a post that took the whole reservation.
        same = amount == stored or (
            amount == U128_MAX
            and stored == store.transfers[record[T_PENDING_ID]][T_AMOUNT])
    elif flags & _VOID:
        same = amount in (0, stored)
    elif flags & _BALANCING:
        same = amount >= stored
    else:
        same = amount == stored
    if not same:
        return R.EXISTS_WITH_DIFFERENT_AMOUNT
    for value, index, result in (
        (event.user_data_128, T_USER_DATA_128, R.EXISTS_WITH_DIFFERENT_USER_DATA_128),
        (event.user_data_64, T_USER_DATA_64, R.EXISTS_WITH_DIFFERENT_USER_DATA_64),
        (event.user_data_32, T_USER_DATA_32, R.EXISTS_WITH_DIFFERENT_USER_DATA_32),
        (event.ledger, T_LEDGER, R.EXISTS_WITH_DIFFERENT_LEDGER),
        (event.code, T_CODE, R.EXISTS_WITH_DIFFERENT_CODE),
    ):
        if value != record[index] and (value or not resolve):
            return result
    return R.EXISTS


def transfer_engine(store: Store) -> tuple[OneEvent, Bulk]:
    """The per-event function of create_transfers over ``store`` and its bulk loop.

    ``one(event, timestamp, undo)`` runs one event with every check in order
    (chains use it). ``bulk(events, i, limit, base, results)`` runs events
    ``i, i + 1, ...`` that are not linked, writing their results, until it
    meets a linked event or ``limit``, and returns where it stopped; it is
    the hot path (module doc, "Performance") and gives exactly what ``one``
    would.
    """
    accounts = store.accounts
    transfers = store.transfers
    pending = store.pending
    failed = store.failed
    heap = store.expiry
    heappush = heapq.heappush

    def bulk(events: Sequence[Any], i: int, limit: int, base: int, results: list[int]) -> int:
        """Unlinked events from ``i``: a fast path for the common case, ``checked`` for the rest.

        The fast path handles only what it can prove is the common case --
        every field in range, no flags, a new id, both accounts found,
        distinct, open and on the transfer's ledger, no overflow -- and then
        succeeds or fails with ``exceeds_*`` (the last checks in order, all
        before them having passed). Anything else goes to ``checked``, which
        runs every check in order.
        """
        due = heap[0][0] if heap else _NEVER
        while i < limit:
            e = events[i]
            ts = base + i
            if ts >= due:
                expire_due(store, ts)
                due = heap[0][0] if heap else _NEVER
            flags = e.flags
            if flags & _LINKED and not flags >> 16:  # _batch.linked(flags), inlined
                return i
            tid = e.id
            code = e.code
            ledger = e.ledger
            debit_id = e.debit_account_id
            credit_id = e.credit_account_id
            amount = e.amount
            if (
                flags
                or e.timestamp | e.pending_id | e.timeout
                or not 0 < tid < U128_MAX
                or not code
                or (((((tid | debit_id | credit_id | amount | e.user_data_128) >> 64
                       | e.user_data_64) >> 32 | e.user_data_32 | ledger) >> 16 | code) >> 16)
                or tid in transfers
                or tid in failed
                or (dr := accounts.get(debit_id)) is None
                or (cr := accounts.get(credit_id)) is None
                or dr is cr
                or dr.ledger != ledger
                or cr.ledger != ledger
                or dr.closed
                or cr.closed
                or (new_dpo := dr.dpo + amount) + dr.dp > U128_MAX
                or (new_cpo := cr.cpo + amount) + cr.cp > U128_MAX
            ):
                result = checked(e, ts, None)
                if result:
                    results[i] = result = int(result)
                    if result in _TRANSIENT:
                        failed.add(tid)
                due = heap[0][0] if heap else _NEVER
            elif dr.flags & _DMNEC and dr.dp + new_dpo > dr.cpo:
                results[i] = _EXCEEDS_CREDITS
                failed.add(tid)
            elif cr.flags & _CMNED and cr.cp + new_cpo > cr.dpo:
                results[i] = _EXCEEDS_DEBITS
                failed.add(tid)
            else:
                dr.dpo = new_dpo
                cr.cpo = new_cpo
                record: Record = (tid, debit_id, credit_id, amount, 0, e.user_data_128,
                                  e.user_data_64, e.user_data_32, 0, ledger, code, 0, ts)
                if type(code) is not int or type(ledger) is not int:
                    record = _plain(record)
                transfers[tid] = record
                dr.txs.append(record)
                cr.txs.append(record)
            i += 1
        return i

    def checked(e: Any, ts: int, undo: Undo | None) -> int:
        """Every check in order (module doc), then the effects."""
        tid = e.id
        debit_id = e.debit_account_id
        credit_id = e.credit_account_id
        amount = e.amount
        pending_id = e.pending_id
        ud128 = e.user_data_128
        ud64 = e.user_data_64
        ud32 = e.user_data_32
        timeout = e.timeout
        ledger = e.ledger
        code = e.code
        flags = e.flags
        if (
            (tid | debit_id | credit_id | amount | pending_id | ud128) >> 128
            or (ud64 | e.timestamp) >> 64
            or (ud32 | timeout | ledger) >> 32
            or (code | flags) >> 16
        ) and _out_of_range(e):
            return R.FIELD_OUT_OF_RANGE
        if e.timestamp:
            return R.TIMESTAMP_MUST_BE_ZERO
        if flags & _UNKNOWN_FLAGS:
            return R.RESERVED_FLAG
        if not tid:
            return R.ID_MUST_NOT_BE_ZERO
        if tid == U128_MAX:
            return R.ID_MUST_NOT_BE_INT_MAX
        existing = transfers.get(tid)
        if existing is not None:
            return _exists(e, existing, store)
        if tid in failed:
            return R.ID_ALREADY_FAILED
        if flags & _RESOLVE:
            return _resolve(e, ts, undo)

        # -- a single-phase or pending transfer --
        if not debit_id:
            return R.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO
        if debit_id == U128_MAX:
            return R.DEBIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX
        if not credit_id:
            return R.CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO
        if credit_id == U128_MAX:
            return R.CREDIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX
        if debit_id == credit_id:
            return R.ACCOUNTS_MUST_BE_DIFFERENT
        if pending_id:
            return R.PENDING_ID_MUST_BE_ZERO
        is_pending = flags & _PENDING
        if timeout and not is_pending:
            return R.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER
        if flags & _CLOSING and not is_pending:
            return R.CLOSING_TRANSFER_MUST_BE_PENDING
        if not ledger:
            return R.LEDGER_MUST_NOT_BE_ZERO
        if not code:
            return R.CODE_MUST_NOT_BE_ZERO
        dr = accounts.get(debit_id)
        if dr is None:
            return R.DEBIT_ACCOUNT_NOT_FOUND
        cr = accounts.get(credit_id)
        if cr is None:
            return R.CREDIT_ACCOUNT_NOT_FOUND
        if dr.ledger != cr.ledger:
            return R.ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER
        if ledger != dr.ledger:
            return R.TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS
        if dr.closed:
            return R.DEBIT_ACCOUNT_ALREADY_CLOSED
        if cr.closed:
            return R.CREDIT_ACCOUNT_ALREADY_CLOSED
        if flags & _BALANCING:
            if flags & _BAL_DEBIT:
                amount = min(amount, max(0, dr.cpo - dr.dp - dr.dpo))
            if flags & _BAL_CREDIT:
                amount = min(amount, max(0, cr.dpo - cr.cp - cr.cpo))
        # The balance each side grows (pending or posted) and the other one.
        if is_pending:
            debit_new, debit_other = dr.dp + amount, dr.dpo
            credit_new, credit_other = cr.cp + amount, cr.cpo
            overflows = R.OVERFLOWS_DEBITS_PENDING, R.OVERFLOWS_CREDITS_PENDING
        else:
            debit_new, debit_other = dr.dpo + amount, dr.dp
            credit_new, credit_other = cr.cpo + amount, cr.cp
            overflows = R.OVERFLOWS_DEBITS_POSTED, R.OVERFLOWS_CREDITS_POSTED
        if debit_new > U128_MAX:
            return overflows[0]
        if credit_new > U128_MAX:
            return overflows[1]
        if debit_new + debit_other > U128_MAX:
            return R.OVERFLOWS_DEBITS
        if credit_new + credit_other > U128_MAX:
            return R.OVERFLOWS_CREDITS
        expiry = ts + timeout * NS_PER_SECOND
        if timeout and expiry >= TIMESTAMP_LIMIT:
            return R.OVERFLOWS_TIMEOUT
        if dr.flags & _DMNEC and debit_new + debit_other > dr.cpo:
            return R.EXCEEDS_CREDITS
        if cr.flags & _CMNED and credit_new + credit_other > cr.dpo:
            return R.EXCEEDS_DEBITS
        if undo is not None:
            undo.touch(dr)
            undo.touch(cr)
            if is_pending:
                undo.status(store, tid)
        if is_pending:
            dr.dp = debit_new
            cr.cp = credit_new
            if flags & _CLOSE_DEBIT:
                dr.closed = True
            if flags & _CLOSE_CREDIT:
                cr.closed = True
            pending[tid] = _ST_PENDING
            if timeout:
                if undo is None:
                    heappush(heap, (expiry, ts, tid))
                else:  # pushed once the chain holds (Undo.commit)
                    undo.expiries.append((expiry, ts, tid))
        else:
            dr.dpo = debit_new
            cr.cpo = credit_new
        record: Record = (tid, debit_id, credit_id, amount, 0, ud128, ud64, ud32, timeout,
                          ledger, code, flags, ts)
        if type(flags) is not int or type(code) is not int or type(ledger) is not int:
            record = _plain(record)
        transfers[tid] = record
        dr.txs.append(record)
        cr.txs.append(record)
        if undo is not None:
            undo.records.append(record)
        return 0

    def _resolve(e: Any, ts: int, undo: Undo | None) -> int:
        """Post or void the pending transfer ``e.pending_id``."""
        flags = e.flags
        if flags & _NOT_WITH_RESOLVE or flags & _RESOLVE == _RESOLVE:
            return R.FLAGS_ARE_MUTUALLY_EXCLUSIVE
        pending_id = e.pending_id
        if not pending_id:
            return R.PENDING_ID_MUST_NOT_BE_ZERO
        if pending_id == U128_MAX:
            return R.PENDING_ID_MUST_NOT_BE_INT_MAX
        if pending_id == e.id:
            return R.PENDING_ID_MUST_BE_DIFFERENT
        if e.timeout:
            return R.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER
        p = transfers.get(pending_id)
        if p is None:
            return R.PENDING_TRANSFER_NOT_FOUND
        if not p[T_FLAGS] & _PENDING:
            return R.PENDING_TRANSFER_NOT_PENDING
        if e.debit_account_id and e.debit_account_id != p[T_DEBIT]:
            return R.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID
        if e.credit_account_id and e.credit_account_id != p[T_CREDIT]:
            return R.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID
        if e.ledger and e.ledger != p[T_LEDGER]:
            return R.PENDING_TRANSFER_HAS_DIFFERENT_LEDGER
        if e.code and e.code != p[T_CODE]:
            return R.PENDING_TRANSFER_HAS_DIFFERENT_CODE
        reserved = p[T_AMOUNT]
        amount = e.amount
        post = flags & _POST
        if post:
            if amount == U128_MAX:
                amount = reserved
            elif amount > reserved:
                return R.EXCEEDS_PENDING_TRANSFER_AMOUNT
        elif amount == 0:
            amount = reserved
        elif amount != reserved:
            return R.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT
        status = pending[pending_id]
        if status == _ST_POSTED:
            return R.PENDING_TRANSFER_ALREADY_POSTED
        if status == _ST_VOIDED:
            return R.PENDING_TRANSFER_ALREADY_VOIDED
        if status == _ST_EXPIRED or (
            p[T_TIMEOUT] and p[T_TIMESTAMP] + p[T_TIMEOUT] * NS_PER_SECOND <= ts
        ):
            return R.PENDING_TRANSFER_EXPIRED
        dr = accounts[p[T_DEBIT]]
        cr = accounts[p[T_CREDIT]]
        if post:
            if dr.closed:
                return R.DEBIT_ACCOUNT_ALREADY_CLOSED
            if cr.closed:
                return R.CREDIT_ACCOUNT_ALREADY_CLOSED
            new_dpo = dr.dpo + amount
            if new_dpo > U128_MAX:
                return R.OVERFLOWS_DEBITS_POSTED
            new_cpo = cr.cpo + amount
            if new_cpo > U128_MAX:
                return R.OVERFLOWS_CREDITS_POSTED
        if undo is not None:
            undo.touch(dr)
            undo.touch(cr)
            undo.status(store, pending_id)
        dr.dp -= reserved
        cr.cp -= reserved
        if post:
            dr.dpo = new_dpo
            cr.cpo = new_cpo
            pending[pending_id] = _ST_POSTED
        else:
            pending[pending_id] = _ST_VOIDED
            if p[T_FLAGS] & _CLOSE_DEBIT:
                dr.closed = False
            if p[T_FLAGS] & _CLOSE_CREDIT:
                cr.closed = False
        record = _plain((
            e.id, p[T_DEBIT], p[T_CREDIT], amount, pending_id,
            e.user_data_128 or p[T_USER_DATA_128], e.user_data_64 or p[T_USER_DATA_64],
            e.user_data_32 or p[T_USER_DATA_32], 0, p[T_LEDGER], p[T_CODE], flags, ts,
        ))
        transfers[e.id] = record
        dr.txs.append(record)
        cr.txs.append(record)
        if undo is not None:
            undo.records.append(record)
        return 0

    return checked, bulk

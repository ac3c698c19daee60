"""create_accounts: validate and store one account event.

The checks run in the order of the result codes (docs/ledger.md,
"create_accounts results"): field ranges, timestamp, flags, id, flag
combination, zero balances, ledger and code -- then, if the id is taken,
which field differs (``exists_with_different_*``) or ``exists``. A new
account starts with zero balances, ``closed`` if created with that flag.

Pure: no I/O.
"""

from __future__ import annotations

from typing import Any, Final

from ._batch import OneEvent
from ._store import Acct, Store, Undo
from .codes import ACCOUNT_FLAGS_KNOWN, U128_MAX, AccountFlags, AccountResult

R = AccountResult
_LIMITS: Final = int(
    AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS
)
_CLOSED: Final = int(AccountFlags.CLOSED)


def _out_of_range(e: Any) -> bool:
    """True if a field -- ``flags`` (16 bits) included -- is negative or wider than its type."""
    wide = (e.id, e.debits_pending, e.debits_posted, e.credits_pending, e.credits_posted,
            e.user_data_128)
    return (
        any(v < 0 or v >> 128 for v in wide)
        or any(v < 0 or v >> 64 for v in (e.user_data_64, e.timestamp))
        or any(v < 0 or v >> 32 for v in (e.user_data_32, e.ledger))
        or any(v < 0 or v >> 16 for v in (e.code, e.flags))
    )


def account_engine(store: Store) -> OneEvent:
    """The per-event function of create_accounts over ``store``."""
    accounts = store.accounts

    def one(e: Any, ts: int, undo: Undo | None) -> int:
        if _out_of_range(e):
            return R.FIELD_OUT_OF_RANGE
        if e.timestamp:
            return R.TIMESTAMP_MUST_BE_ZERO
        flags = e.flags
        if flags & ~ACCOUNT_FLAGS_KNOWN:
            return R.RESERVED_FLAG
        aid = e.id
        if not aid:
            return R.ID_MUST_NOT_BE_ZERO
        if aid == U128_MAX:
            return R.ID_MUST_NOT_BE_INT_MAX
        if flags & _LIMITS == _LIMITS:
            return R.FLAGS_ARE_MUTUALLY_EXCLUSIVE
        if e.debits_pending:
            return R.DEBITS_PENDING_MUST_BE_ZERO
        if e.debits_posted:
            return R.DEBITS_POSTED_MUST_BE_ZERO
        if e.credits_pending:
            return R.CREDITS_PENDING_MUST_BE_ZERO
        if e.credits_posted:
            return R.CREDITS_POSTED_MUST_BE_ZERO
        if not e.ledger:
            return R.LEDGER_MUST_NOT_BE_ZERO
        if not e.code:
            return R.CODE_MUST_NOT_BE_ZERO
        existing = accounts.get(aid)
        if existing is not None:
            if flags != existing.flags:
                return R.EXISTS_WITH_DIFFERENT_FLAGS
            if e.user_data_128 != existing.ud128:
                return R.EXISTS_WITH_DIFFERENT_USER_DATA_128
            if e.user_data_64 != existing.ud64:
                return R.EXISTS_WITH_DIFFERENT_USER_DATA_64
            if e.user_data_32 != existing.ud32:
                return R.EXISTS_WITH_DIFFERENT_USER_DATA_32
            if e.ledger != existing.ledger:
                return R.EXISTS_WITH_DIFFERENT_LEDGER
            if e.code != existing.code:
                return R.EXISTS_WITH_DIFFERENT_CODE
            return R.EXISTS
        accounts[aid] = Acct(  # int(): callers may pass IntFlag/IntEnum members
            int(aid), int(e.user_data_128), int(e.user_data_64), int(e.user_data_32),
            int(e.ledger), int(e.code), int(flags), ts, bool(flags & _CLOSED),
        )
        if undo is not None:
            undo.created_accounts.append(aid)
        return 0

    return one

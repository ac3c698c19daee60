"""Reads of the ledger: lookups, an account's paged history, pending status, totals.

Every function here reads a :class:`~cellmesh.ledger._store.Store` and
returns new protein values; none changes anything, so a replica may answer
reads between applies. Reads see the state as of the last applied command:
a pending transfer whose timeout has passed since then still shows as
pending until the next write or :class:`~cellmesh.ledger.proteins.Pulse`.
Malformed requests raise :class:`~cellmesh.ledger.errors.InvalidQuery`
naming the field.

Pure: no I/O.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from operator import itemgetter
from typing import Final

from ._store import T_CREDIT, T_DEBIT, T_TIMESTAMP, Acct, Store
from .codes import BATCH_MAX, FILTER_FLAGS_KNOWN, U64_MAX, U128_MAX, AccountFlags, FilterFlags
from .errors import InvalidQuery
from .proteins import Account, BooksReport, LedgerTotals, LimitViolation, Transfer

_CLOSED: Final = int(AccountFlags.CLOSED)
_DEBITS_LIMITED: Final = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
_CREDITS_LIMITED: Final = int(AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS)
_timestamp_of = itemgetter(T_TIMESTAMP)


def account_value(a: Acct) -> Account:
    """The protein of a stored account (``flags`` carry ``closed`` as it is now)."""
    flags = (a.flags & ~_CLOSED) | (_CLOSED if a.closed else 0)
    return Account(a.id, a.dp, a.dpo, a.cp, a.cpo, a.ud128, a.ud64, a.ud32, a.ledger,
                   a.code, flags, a.timestamp)


def _check_ids(field: str, ids: Sequence[int]) -> None:
    if len(ids) > BATCH_MAX:
        raise InvalidQuery(field, f"{len(ids)} ids, at most {BATCH_MAX} per lookup")


def check_int(field: str, value: object) -> int:
    """``value`` as a plain int; :class:`InvalidQuery` naming ``field`` unless it is an
    ``int`` (an enum member counts; a ``bool``, a float or a string does not)."""
    if type(value) is int:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidQuery(field, f"must be an int, got {type(value).__name__} {value!r}")
    return int(value)


def check_account_transfers(account_id: int, timestamp_min: int, timestamp_max: int,
                            limit: int, flags: int) -> None:
    """Raise :class:`InvalidQuery` naming the field when a ``GetAccountTransfers`` is
    malformed (the cell checks; so does the client, before sending)."""
    account_id = check_int("account_id", account_id)
    timestamp_min = check_int("timestamp_min", timestamp_min)
    timestamp_max = check_int("timestamp_max", timestamp_max)
    limit = check_int("limit", limit)
    flags = check_int("flags", flags)
    if not 0 < account_id < U128_MAX:
        raise InvalidQuery("account_id", f"must be in 1..2**128-2, got {account_id}")
    for name, value in (("timestamp_min", timestamp_min), ("timestamp_max", timestamp_max)):
        if not 0 <= value < U64_MAX:
            raise InvalidQuery(name, f"must be in 0..2**64-2, got {value}")
    if timestamp_min and timestamp_max and timestamp_min > timestamp_max:
        raise InvalidQuery("timestamp_min", f"{timestamp_min} is after timestamp_max "
                                            f"{timestamp_max}")
    if not 0 < limit <= BATCH_MAX:
        raise InvalidQuery("limit", f"must be in 1..{BATCH_MAX}, got {limit}")
    if flags < 0 or flags & ~FILTER_FLAGS_KNOWN:
        raise InvalidQuery("flags", f"unknown filter flag bits in {flags:#x}")
    if not flags & (FilterFlags.DEBITS | FilterFlags.CREDITS):
        raise InvalidQuery("flags", "select DEBITS, CREDITS or both")


def check_max_violations(max_violations: int) -> None:
    """Raise :class:`InvalidQuery` unless a ``CheckBooks`` limit is an int in range."""
    max_violations = check_int("max_violations", max_violations)
    if not 0 < max_violations <= BATCH_MAX:
        raise InvalidQuery("max_violations", f"must be in 1..{BATCH_MAX}, got {max_violations}")


def lookup_accounts(store: Store, ids: Sequence[int]) -> list[Account]:
    """The accounts with these ids, in request order; unknown ids are left out."""
    _check_ids("ids", ids)
    accounts = store.accounts
    return [account_value(a) for aid in ids if (a := accounts.get(aid)) is not None]


def lookup_transfers(store: Store, ids: Sequence[int]) -> list[Transfer]:
    """The transfers with these ids, in request order; unknown ids are left out."""
    _check_ids("ids", ids)
    transfers = store.transfers
    return [Transfer(*r) for tid in ids if (r := transfers.get(tid)) is not None]


def pending_statuses(store: Store, ids: Sequence[int]) -> list[int]:
    """Each id's :class:`~cellmesh.ledger.codes.PendingStatus` (0: not a pending transfer)."""
    _check_ids("ids", ids)
    pending = store.pending
    return [pending.get(tid, 0) for tid in ids]


def account_transfers(
    store: Store,
    account_id: int,
    *,
    timestamp_min: int = 0,
    timestamp_max: int = 0,
    limit: int = BATCH_MAX,
    flags: int = FilterFlags.DEBITS | FilterFlags.CREDITS,
) -> list[Transfer]:
    """A page of ``account_id``'s transfers by timestamp (an unknown account has none).

    ``timestamp_min``/``timestamp_max`` are inclusive bounds, 0 for none;
    ``flags`` selects debits and/or credits and the order (``REVERSED``:
    newest first); at most ``limit`` transfers (1 to ``BATCH_MAX``).
    """
    check_account_transfers(account_id, timestamp_min, timestamp_max, limit, flags)
    debits, credits = flags & FilterFlags.DEBITS, flags & FilterFlags.CREDITS
    account = store.accounts.get(account_id)
    if account is None:
        return []
    txs = account.txs
    lo = bisect.bisect_left(txs, timestamp_min, key=_timestamp_of) if timestamp_min else 0
    hi = (bisect.bisect_right(txs, timestamp_max, key=_timestamp_of) if timestamp_max
          else len(txs))
    window = range(hi - 1, lo - 1, -1) if flags & FilterFlags.REVERSED else range(lo, hi)
    page: list[Transfer] = []
    for k in window:
        record = txs[k]
        if (debits and record[T_DEBIT] == account_id) or (
            credits and record[T_CREDIT] == account_id
        ):
            page.append(Transfer(*record))
            if len(page) == limit:
                break
    return page


def totals(store: Store) -> list[LedgerTotals]:
    """Per-ledger sums of every balance column, by ledger number."""
    sums: dict[int, list[int]] = {}
    for a in store.accounts.values():
        row = sums.get(a.ledger)
        if row is None:
            row = sums[a.ledger] = [0, 0, 0, 0, 0]
        row[0] += 1
        row[1] += a.dp
        row[2] += a.dpo
        row[3] += a.cp
        row[4] += a.cpo
    return [
        LedgerTotals(ledger=ledger, accounts=n, debits_pending=dp, debits_posted=dpo,
                     credits_pending=cp, credits_posted=cpo)
        for ledger, (n, dp, dpo, cp, cpo) in sorted(sums.items())
    ]


def _limit_broken(a: Acct) -> str | None:
    if a.flags & _DEBITS_LIMITED and a.dp + a.dpo > a.cpo:
        return "debits_must_not_exceed_credits"
    if a.flags & _CREDITS_LIMITED and a.cp + a.cpo > a.dpo:
        return "credits_must_not_exceed_debits"
    return None


def check_books(store: Store, max_violations: int = 100) -> BooksReport:
    """Every invariant an operator can check from outside, over the whole state.

    Per ledger, the totals (:func:`totals`: debits equal credits, pending and
    posted); every account with a balance limit within it (the first
    ``max_violations`` offenders by id are listed, all are counted). A
    healthy ledger always reports ``ok``: a report that is not means a bug.
    """
    check_max_violations(max_violations)
    broken: list[tuple[int, Acct, str]] = []
    for a in store.accounts.values():
        limit = _limit_broken(a)
        if limit is not None:
            broken.append((a.id, a, limit))
    broken.sort(key=itemgetter(0))
    violations = [
        LimitViolation(account_id=a.id, ledger=a.ledger, limit=limit, debits_pending=a.dp,
                       debits_posted=a.dpo, credits_pending=a.cp, credits_posted=a.cpo)
        for _, a, limit in broken[:max_violations]
    ]
    return BooksReport(ledgers=totals(store), violations=violations,
                       violation_count=len(broken), transfers=len(store.transfers),
                       timestamp=store.clock, applied_index=store.applied_index)

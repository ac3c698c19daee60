"""The ledger benchmark's baseline: the same ledger in stdlib sqlite3, as a Python user would.

Theory of operation
-------------------
One database file in WAL mode with ``synchronous=FULL``, one process, one
transaction per command (``BEGIN`` ... ``COMMIT``: one fsync'd commit per
batch), prepared statements reused through one cursor. A ``shared`` ledger
is one of several connections (threads) writing the same file: it waits for
the write lock (``busy_timeout``) and takes it as its transaction begins
(``BEGIN IMMEDIATE``); the concurrent-clients baselines use it
(:mod:`cellmesh.bench._ledger_singles`). It runs the same
checks in the same order as :mod:`cellmesh.ledger` for everything the
benchmark sends and returns the same result codes (the bench compares every
result of every batch; ``tests/bench/test_ledger_bench.py`` checks a random
workload against :class:`~cellmesh.ledger.LedgerState`):

* accounts: field checks, ``exists`` / ``exists_with_different_*``;
* transfers: field checks, idempotency (``exists*``), ``id_already_failed``
  after transient failures, accounts found, same ledger, closed accounts,
  overflows, balance limits; pending transfers with a timeout that expire
  by the batch timestamps; post (full or partial) and void with every
  pending check; linked chains as SAVEPOINTs rolled back on failure;
* the per-account history indexes that ``get_account_transfers`` needs.

What it leaves out, so it is a fair *floor* rather than a port: values
are SQLite INTEGERs (63 bits: larger ids and user data are refused with
``field_out_of_range``, and balances overflow at 2**63 instead of 2**128,
where the ledger takes 128 bits; ``AMOUNT_MAX`` still means "the whole
pending amount"), and the balancing and closing transfer flags are refused
as ``reserved_flag``. The benchmark's workload stays inside all of that.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from ..ledger import AccountResult, TransferFlags, TransferResult
from ..ledger.codes import NS_PER_SECOND, TIMESTAMP_LIMIT, TRANSIENT_FAILURES, U128_MAX

A = AccountResult
T = TransferResult
I64_MAX: Final = (1 << 63) - 1
_LINKED: Final = int(TransferFlags.LINKED)
_PENDING: Final = int(TransferFlags.PENDING)
_POST: Final = int(TransferFlags.POST_PENDING_TRANSFER)
_VOID: Final = int(TransferFlags.VOID_PENDING_TRANSFER)
_SUPPORTED: Final = _LINKED | _PENDING | _POST | _VOID
_DMNEC: Final = 2
_CMNED: Final = 4
_CLOSED: Final = 8
_TRANSIENT: Final = TRANSIENT_FAILURES  # the ledger's: the same ids are remembered
# Pending status values, as in cellmesh.ledger.PendingStatus.
_ST_PENDING, _ST_POSTED, _ST_VOIDED, _ST_EXPIRED = 1, 2, 3, 4
#: How long a shared connection waits for the write lock before SQLITE_BUSY.
SHARED_BUSY_TIMEOUT_MS: Final = 5_000

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS accounts (
    id INTEGER PRIMARY KEY, user_data_128 INTEGER NOT NULL, user_data_64 INTEGER NOT NULL,
    user_data_32 INTEGER NOT NULL, ledger INTEGER NOT NULL, code INTEGER NOT NULL,
    flags INTEGER NOT NULL, timestamp INTEGER NOT NULL,
    debits_pending INTEGER NOT NULL, debits_posted INTEGER NOT NULL,
    credits_pending INTEGER NOT NULL, credits_posted INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS transfers (
    id INTEGER PRIMARY KEY, debit_account_id INTEGER NOT NULL,
    credit_account_id INTEGER NOT NULL, amount INTEGER NOT NULL, pending_id INTEGER NOT NULL,
    user_data_128 INTEGER NOT NULL, user_data_64 INTEGER NOT NULL,
    user_data_32 INTEGER NOT NULL, timeout INTEGER NOT NULL, ledger INTEGER NOT NULL,
    code INTEGER NOT NULL, flags INTEGER NOT NULL, timestamp INTEGER NOT NULL,
    status INTEGER, expires_at INTEGER);
CREATE INDEX IF NOT EXISTS transfers_by_debit ON transfers (debit_account_id, timestamp);
CREATE INDEX IF NOT EXISTS transfers_by_credit ON transfers (credit_account_id, timestamp);
CREATE INDEX IF NOT EXISTS transfers_expiring ON transfers (expires_at, timestamp)
    WHERE status = 1 AND expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS failed (id INTEGER PRIMARY KEY);
"""
_TRANSFER_COLUMNS: Final = ("debit_account_id, credit_account_id, amount, pending_id, "
                            "user_data_128, user_data_64, user_data_32, timeout, ledger, code, "
                            "flags, status, expires_at, timestamp")
_BALANCES: Final = "debits_pending, debits_posted, credits_pending, credits_posted"


class SqliteLedger:
    """A ledger in one SQLite file (see the module doc)."""

    def __init__(self, path: Path, *, shared: bool = False) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        #: ``shared``: one of several connections writing the file at once, so
        #: a writer waits for the lock (``busy_timeout``) and takes it when its
        #: transaction begins (``BEGIN IMMEDIATE``): a deferred transaction
        #: that reads first could not upgrade once another one had committed.
        self.begin = "BEGIN IMMEDIATE" if shared else "BEGIN"
        if shared:
            self.db.execute(f"PRAGMA busy_timeout={SHARED_BUSY_TIMEOUT_MS}")
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        self.cur = self.db.cursor()
        self.clock = 0
        self.next_expiry = self._earliest_expiry()

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    def _earliest_expiry(self) -> int | None:
        row = self.db.execute(
            "SELECT min(expires_at) FROM transfers WHERE status = 1 AND expires_at IS NOT NULL"
        ).fetchone()
        return None if row[0] is None else int(row[0])

    def _base(self, timestamp: int, count: int) -> int:
        base = max(timestamp, self.clock + 1)
        self.clock = base + max(count, 1) - 1
        return base

    # -- batches ----------------------------------------------------------------

    def create_accounts(self, events: Sequence[Any], timestamp: int) -> list[int]:
        """Create accounts in one transaction; one result code per event."""
        return self._batch(events, timestamp, self._account, A.EXISTS, frozenset())

    def create_transfers(self, events: Sequence[Any], timestamp: int) -> list[int]:
        """Create transfers in one transaction; one result code per event."""
        return self._batch(events, timestamp, self._transfer, T.EXISTS, _TRANSIENT)

    def _batch(self, events: Sequence[Any], timestamp: int, one: Any, exists: int,
               transient: frozenset[int]) -> list[int]:
        cur = self.cur
        base = self._base(timestamp, len(events))
        results = [0] * len(events)
        limit = len(events)
        if limit and events[-1].flags & _LINKED:
            start = limit - 1
            while start > 0 and events[start - 1].flags & _LINKED:
                start -= 1
            for k in range(start, limit - 1):
                results[k] = T.LINKED_EVENT_FAILED
            results[limit - 1] = T.LINKED_EVENT_CHAIN_OPEN
            limit = start
        cur.execute(self.begin)
        self._expire(base)
        in_chain = False
        chain_start = 0
        i = 0
        while i < limit:
            e = events[i]
            ts = base + i
            if not in_chain:
                if self.next_expiry is not None and self.next_expiry <= ts:
                    self._expire(ts)
                if e.flags & _LINKED:
                    cur.execute("SAVEPOINT chain")
                    in_chain, chain_start = True, i
            code = int(one(e, ts))
            results[i] = code
            if code and code != exists:
                if in_chain:
                    cur.execute("ROLLBACK TO chain")
                    cur.execute("RELEASE chain")
                    in_chain = False
                    for k in range(chain_start, i):
                        results[k] = T.LINKED_EVENT_FAILED
                    while i + 1 < limit and events[i].flags & _LINKED:
                        i += 1
                        results[i] = T.LINKED_EVENT_FAILED
                if code in transient:
                    cur.execute("INSERT INTO failed (id) VALUES (?)", (e.id,))
            elif in_chain and not e.flags & _LINKED:
                cur.execute("RELEASE chain")
                in_chain = False
            i += 1
        cur.execute("COMMIT")
        return results

    def _expire(self, now: int) -> None:
        cur = self.cur
        due = cur.execute(
            "SELECT id, debit_account_id, credit_account_id, amount FROM transfers "
            "WHERE status = 1 AND expires_at IS NOT NULL AND expires_at <= ? "
            "ORDER BY expires_at, timestamp", (now,)).fetchall()
        for tid, debit, credit, amount in due:
            cur.execute("UPDATE accounts SET debits_pending = debits_pending - ? WHERE id = ?",
                        (amount, debit))
            cur.execute("UPDATE accounts SET credits_pending = credits_pending - ? WHERE id = ?",
                        (amount, credit))
            cur.execute("UPDATE transfers SET status = 4 WHERE id = ?", (tid,))
        self.next_expiry = self._earliest_expiry()

    # -- one account --------------------------------------------------------------

    def _account(self, e: Any, ts: int) -> int:
        values = (e.id, e.debits_pending, e.debits_posted, e.credits_pending, e.credits_posted,
                  e.user_data_128, e.user_data_64, e.user_data_32, e.ledger, e.code, e.flags,
                  e.timestamp)
        if any(not 0 <= v <= I64_MAX for v in values):
            return A.FIELD_OUT_OF_RANGE
        if e.timestamp:
            return A.TIMESTAMP_MUST_BE_ZERO
        if e.flags & ~0xF:
            return A.RESERVED_FLAG
        if not e.id:
            return A.ID_MUST_NOT_BE_ZERO
        if e.flags & (_DMNEC | _CMNED) == _DMNEC | _CMNED:
            return A.FLAGS_ARE_MUTUALLY_EXCLUSIVE
        for value, code in ((e.debits_pending, A.DEBITS_PENDING_MUST_BE_ZERO),
                            (e.debits_posted, A.DEBITS_POSTED_MUST_BE_ZERO),
                            (e.credits_pending, A.CREDITS_PENDING_MUST_BE_ZERO),
                            (e.credits_posted, A.CREDITS_POSTED_MUST_BE_ZERO),
                            (not e.ledger, A.LEDGER_MUST_NOT_BE_ZERO),
                            (not e.code, A.CODE_MUST_NOT_BE_ZERO)):
            if value:
                return code
        row = self.cur.execute(
            "SELECT flags, user_data_128, user_data_64, user_data_32, ledger, code "
            "FROM accounts WHERE id = ?", (e.id,)).fetchone()
        if row is not None:
            for mine, theirs, code in zip(
                (e.flags, e.user_data_128, e.user_data_64, e.user_data_32, e.ledger, e.code),
                row,
                (A.EXISTS_WITH_DIFFERENT_FLAGS, A.EXISTS_WITH_DIFFERENT_USER_DATA_128,
                 A.EXISTS_WITH_DIFFERENT_USER_DATA_64, A.EXISTS_WITH_DIFFERENT_USER_DATA_32,
                 A.EXISTS_WITH_DIFFERENT_LEDGER, A.EXISTS_WITH_DIFFERENT_CODE), strict=True):
                if mine != theirs:
                    return code
            return A.EXISTS
        self.cur.execute(
            "INSERT INTO accounts VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 0, 0, 0)",
            (e.id, e.user_data_128, e.user_data_64, e.user_data_32, e.ledger, e.code, e.flags,
             ts))
        return 0

    # -- one transfer -------------------------------------------------------------

    def _transfer(self, e: Any, ts: int) -> int:
        flags = e.flags
        amount = e.amount
        values = (e.id, e.debit_account_id, e.credit_account_id, e.pending_id, e.user_data_128,
                  e.user_data_64, e.user_data_32, e.timeout, e.ledger, e.code, flags,
                  e.timestamp)
        if any(not 0 <= v <= I64_MAX for v in values) or not 0 <= amount <= U128_MAX:
            return T.FIELD_OUT_OF_RANGE
        if e.timestamp:
            return T.TIMESTAMP_MUST_BE_ZERO
        if flags & ~_SUPPORTED:
            return T.RESERVED_FLAG
        tid = e.id
        if not tid:
            return T.ID_MUST_NOT_BE_ZERO
        cur = self.cur
        row = cur.execute(f"SELECT {_TRANSFER_COLUMNS} FROM transfers WHERE id = ?",
                          (tid,)).fetchone()
        if row is not None:
            return self._exists(e, row)
        if cur.execute("SELECT 1 FROM failed WHERE id = ?", (tid,)).fetchone():
            return T.ID_ALREADY_FAILED
        if flags & (_POST | _VOID):
            return self._resolve(e, ts)
        debit_id, credit_id = e.debit_account_id, e.credit_account_id
        for failed, code in ((not debit_id, T.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO),
                             (not credit_id, T.CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO),
                             (debit_id == credit_id, T.ACCOUNTS_MUST_BE_DIFFERENT),
                             (e.pending_id, T.PENDING_ID_MUST_BE_ZERO),
                             (e.timeout and not flags & _PENDING,
                              T.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER),
                             (not e.ledger, T.LEDGER_MUST_NOT_BE_ZERO),
                             (not e.code, T.CODE_MUST_NOT_BE_ZERO)):
            if failed:
                return code
        dr = cur.execute(f"SELECT ledger, flags, {_BALANCES} FROM accounts WHERE id = ?",
                         (debit_id,)).fetchone()
        if dr is None:
            return T.DEBIT_ACCOUNT_NOT_FOUND
        cr = cur.execute(f"SELECT ledger, flags, {_BALANCES} FROM accounts WHERE id = ?",
                         (credit_id,)).fetchone()
        if cr is None:
            return T.CREDIT_ACCOUNT_NOT_FOUND
        if dr[0] != cr[0]:
            return T.ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER
        if e.ledger != dr[0]:
            return T.TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS
        if dr[1] & _CLOSED:
            return T.DEBIT_ACCOUNT_ALREADY_CLOSED
        if cr[1] & _CLOSED:
            return T.CREDIT_ACCOUNT_ALREADY_CLOSED
        _, dflags, d_dp, d_dpo, _, d_cpo = dr
        _, cflags, _, c_dpo, c_cp, c_cpo = cr
        pending = flags & _PENDING
        if pending:
            if d_dp + amount > I64_MAX:
                return T.OVERFLOWS_DEBITS_PENDING
            if c_cp + amount > I64_MAX:
                return T.OVERFLOWS_CREDITS_PENDING
        else:
            if d_dpo + amount > I64_MAX:
                return T.OVERFLOWS_DEBITS_POSTED
            if c_cpo + amount > I64_MAX:
                return T.OVERFLOWS_CREDITS_POSTED
        if d_dp + d_dpo + amount > I64_MAX:
            return T.OVERFLOWS_DEBITS
        if c_cp + c_cpo + amount > I64_MAX:
            return T.OVERFLOWS_CREDITS
        expires_at = ts + e.timeout * NS_PER_SECOND if pending and e.timeout else None
        if expires_at is not None and expires_at >= TIMESTAMP_LIMIT:
            return T.OVERFLOWS_TIMEOUT
        if dflags & _DMNEC and d_dp + d_dpo + amount > d_cpo:
            return T.EXCEEDS_CREDITS
        if cflags & _CMNED and c_cp + c_cpo + amount > c_dpo:
            return T.EXCEEDS_DEBITS
        if pending:
            cur.execute("UPDATE accounts SET debits_pending = ? WHERE id = ?",
                        (d_dp + amount, debit_id))
            cur.execute("UPDATE accounts SET credits_pending = ? WHERE id = ?",
                        (c_cp + amount, credit_id))
        else:
            cur.execute("UPDATE accounts SET debits_posted = ? WHERE id = ?",
                        (d_dpo + amount, debit_id))
            cur.execute("UPDATE accounts SET credits_posted = ? WHERE id = ?",
                        (c_cpo + amount, credit_id))
        cur.execute(
            "INSERT INTO transfers VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (tid, debit_id, credit_id, amount, e.user_data_128, e.user_data_64, e.user_data_32,
             e.timeout, e.ledger, e.code, flags, ts, _ST_PENDING if pending else None,
             expires_at))
        if expires_at is not None and (self.next_expiry is None
                                       or expires_at < self.next_expiry):
            self.next_expiry = expires_at
        return 0

    def _resolve(self, e: Any, ts: int) -> int:
        flags = e.flags
        if flags & _PENDING or flags & (_POST | _VOID) == _POST | _VOID:
            return T.FLAGS_ARE_MUTUALLY_EXCLUSIVE
        pid = e.pending_id
        if not pid:
            return T.PENDING_ID_MUST_NOT_BE_ZERO
        if pid == e.id:
            return T.PENDING_ID_MUST_BE_DIFFERENT
        if e.timeout:
            return T.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER
        cur = self.cur
        p = cur.execute(f"SELECT {_TRANSFER_COLUMNS} FROM transfers WHERE id = ?",
                        (pid,)).fetchone()
        if p is None:
            return T.PENDING_TRANSFER_NOT_FOUND
        (p_debit, p_credit, reserved, _, p_u128, p_u64, p_u32, p_timeout, p_ledger, p_code,
         p_flags, status, _, p_ts) = p
        if not p_flags & _PENDING:
            return T.PENDING_TRANSFER_NOT_PENDING
        for mine, theirs, code in (
                (e.debit_account_id, p_debit, T.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID),
                (e.credit_account_id, p_credit,
                 T.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID),
                (e.ledger, p_ledger, T.PENDING_TRANSFER_HAS_DIFFERENT_LEDGER),
                (e.code, p_code, T.PENDING_TRANSFER_HAS_DIFFERENT_CODE)):
            if mine and mine != theirs:
                return code
        amount = e.amount
        post = flags & _POST
        if post:
            if amount == U128_MAX:
                amount = reserved
            elif amount > reserved:
                return T.EXCEEDS_PENDING_TRANSFER_AMOUNT
        elif amount == 0:
            amount = reserved
        elif amount != reserved:
            return T.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT
        if status == _ST_POSTED:
            return T.PENDING_TRANSFER_ALREADY_POSTED
        if status == _ST_VOIDED:
            return T.PENDING_TRANSFER_ALREADY_VOIDED
        if status == _ST_EXPIRED or (p_timeout and p_ts + p_timeout * NS_PER_SECOND <= ts):
            return T.PENDING_TRANSFER_EXPIRED
        dr = cur.execute(f"SELECT flags, {_BALANCES} FROM accounts WHERE id = ?",
                         (p_debit,)).fetchone()
        cr = cur.execute(f"SELECT flags, {_BALANCES} FROM accounts WHERE id = ?",
                         (p_credit,)).fetchone()
        if post:
            if dr[0] & _CLOSED:
                return T.DEBIT_ACCOUNT_ALREADY_CLOSED
            if cr[0] & _CLOSED:
                return T.CREDIT_ACCOUNT_ALREADY_CLOSED
            if dr[2] + amount > I64_MAX:
                return T.OVERFLOWS_DEBITS_POSTED
            if cr[4] + amount > I64_MAX:
                return T.OVERFLOWS_CREDITS_POSTED
        posted = amount if post else 0
        cur.execute("UPDATE accounts SET debits_pending = debits_pending - ?, "
                    "debits_posted = debits_posted + ? WHERE id = ?", (reserved, posted, p_debit))
        cur.execute("UPDATE accounts SET credits_pending = credits_pending - ?, "
                    "credits_posted = credits_posted + ? WHERE id = ?",
                    (reserved, posted, p_credit))
        cur.execute("UPDATE transfers SET status = ? WHERE id = ?",
                    (_ST_POSTED if post else _ST_VOIDED, pid))
        cur.execute(
            "INSERT INTO transfers VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, NULL, NULL)",
            (e.id, p_debit, p_credit, amount, pid, e.user_data_128 or p_u128,
             e.user_data_64 or p_u64, e.user_data_32 or p_u32, p_ledger, p_code, flags, ts))
        return 0

    def _exists(self, e: Any, row: tuple[Any, ...]) -> int:
        (debit, credit, amount, pending_id, u128, u64, u32, timeout, ledger, code, flags,
         _, _, _) = row
        if e.flags != flags:
            return T.EXISTS_WITH_DIFFERENT_FLAGS
        if e.pending_id != pending_id:
            return T.EXISTS_WITH_DIFFERENT_PENDING_ID
        if e.timeout != timeout:
            return T.EXISTS_WITH_DIFFERENT_TIMEOUT
        resolve = flags & (_POST | _VOID)
        if e.debit_account_id != debit and (e.debit_account_id or not resolve):
            return T.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID
        if e.credit_account_id != credit and (e.credit_account_id or not resolve):
            return T.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID
        if flags & _POST:
            (full,) = self.cur.execute("SELECT amount FROM transfers WHERE id = ?",
                                       (pending_id,)).fetchone()
            # as the ledger: the amount posted, or AMOUNT_MAX for a post of all of it
            same = e.amount == amount or (e.amount == U128_MAX and amount == full)
        elif flags & _VOID:
            same = e.amount in (0, amount)
        else:
            same = e.amount == amount
        if not same:
            return T.EXISTS_WITH_DIFFERENT_AMOUNT
        for mine, theirs, result in (
                (e.user_data_128, u128, T.EXISTS_WITH_DIFFERENT_USER_DATA_128),
                (e.user_data_64, u64, T.EXISTS_WITH_DIFFERENT_USER_DATA_64),
                (e.user_data_32, u32, T.EXISTS_WITH_DIFFERENT_USER_DATA_32),
                (e.ledger, ledger, T.EXISTS_WITH_DIFFERENT_LEDGER),
                (e.code, code, T.EXISTS_WITH_DIFFERENT_CODE)):
            if mine != theirs and (mine or not resolve):
                return result
        return T.EXISTS

    def balances(self, account_id: int) -> tuple[int, int, int, int] | None:
        """(debits_pending, debits_posted, credits_pending, credits_posted), or None."""
        row = self.db.execute(f"SELECT {_BALANCES} FROM accounts WHERE id = ?",
                              (account_id,)).fetchone()
        return None if row is None else (row[0], row[1], row[2], row[3])

"""A tiny, independent reference ledger for the model-based tests.

Written from docs/ledger.md, sharing no code with cellmesh.ledger: plain
dicts, a deep copy of the whole model before each linked chain (restored if
the chain fails), expiry by scanning every pending transfer, and the checks
as ordered ``(failed?, code)`` rules. Slow and obvious on purpose.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

U128 = (1 << 128) - 1
SECOND = 1_000_000_000

# Flag bits, spelled out again (not imported) so a renumbering is caught.
LINKED, PENDING, POST, VOID = 1, 2, 4, 8
BAL_D, BAL_C, CLOSE_D, CLOSE_C = 16, 32, 64, 128
A_DMNEC, A_CMNED, A_CLOSED = 2, 4, 8

# Result names; their numbers come from the docs table (checked by test_docs).
TRANSIENT = {"debit_account_not_found", "credit_account_not_found",
             "pending_transfer_not_found", "exceeds_credits", "exceeds_debits",
             "debit_account_already_closed", "credit_account_already_closed",
             "overflows_debits_pending", "overflows_credits_pending",
             "overflows_debits_posted", "overflows_credits_posted",
             "overflows_debits", "overflows_credits"}


def is_linked(flags: int) -> bool:
    """Flags are 16 bits: outside them (negative, wider) they link nothing."""
    return 0 <= flags < 1 << 16 and bool(flags & LINKED)


class RefLedger:
    """The model: accounts and transfers as dicts of dicts."""

    def __init__(self) -> None:
        self.accounts: dict[int, dict[str, Any]] = {}
        self.transfers: dict[int, dict[str, Any]] = {}
        self.status: dict[int, str] = {}
        self.failed: set[int] = set()
        self.clock = 0

    # -- time --

    def _expire(self, now: int) -> int:
        count = 0
        for tid, st in self.status.items():
            t = self.transfers[tid]
            if st == "pending" and t["timeout"] and t["timestamp"] + t["timeout"] * SECOND <= now:
                self.status[tid] = "expired"
                self.accounts[t["debit"]]["dp"] -= t["amount"]
                self.accounts[t["credit"]]["cp"] -= t["amount"]
                if t["flags"] & CLOSE_D:
                    self.accounts[t["debit"]]["closed"] = False
                if t["flags"] & CLOSE_C:
                    self.accounts[t["credit"]]["closed"] = False
                count += 1
        return count

    def _base(self, timestamp: int, count: int) -> int:
        base = max(timestamp, self.clock + 1)
        self.clock = base + max(count, 1) - 1
        return base

    def pulse(self, timestamp: int) -> int:
        return self._expire(self._base(timestamp, 1))

    # -- batches --

    def _batch(self, events: Sequence[Any], timestamp: int,
               one: Callable[[Any, int], str], expire_each: bool) -> list[str]:
        base = self._base(timestamp, len(events))
        self._expire(base)
        out = ["ok"] * len(events)
        # Split into chains (runs joined by the linked flag).
        chains: list[list[int]] = []
        current: list[int] = []
        for i, e in enumerate(events):
            current.append(i)
            if not is_linked(e.flags):
                chains.append(current)
                current = []
        if current:  # open at the end
            for i in current:
                out[i] = "linked_event_failed"
            out[current[-1]] = "linked_event_chain_open"
        for chain in chains:
            if expire_each:
                self._expire(base + chain[0])
            saved = copy.deepcopy((self.accounts, self.transfers, self.status))
            for i in chain:
                result = one(events[i], base + i)
                out[i] = result
                if result not in ("ok", "exists"):
                    if len(chain) > 1:
                        self.accounts, self.transfers, self.status = saved
                        for j in chain:
                            if j != i:
                                out[j] = "linked_event_failed"
                    if result in TRANSIENT:
                        self.failed.add(events[i].id)
                    break
        return out

    def create_accounts(self, events: Sequence[Any], timestamp: int) -> list[str]:
        return self._batch(events, timestamp, self._account, expire_each=False)

    def create_transfers(self, events: Sequence[Any], timestamp: int) -> list[str]:
        return self._batch(events, timestamp, self._transfer, expire_each=True)

    # -- one account --

    def _account(self, e: Any, ts: int) -> str:
        fields = [(e.id, 128), (e.debits_pending, 128), (e.debits_posted, 128),
                  (e.credits_pending, 128), (e.credits_posted, 128), (e.user_data_128, 128),
                  (e.user_data_64, 64), (e.timestamp, 64), (e.user_data_32, 32),
                  (e.ledger, 32), (e.code, 16), (e.flags, 16)]
        old = self.accounts.get(e.id)
        rules: list[tuple[Callable[[], bool], str]] = [
            (lambda: any(not 0 <= v < 1 << w for v, w in fields), "field_out_of_range"),
            (lambda: e.timestamp != 0, "timestamp_must_be_zero"),
            (lambda: e.flags >= 16, "reserved_flag"),
            (lambda: e.id == 0, "id_must_not_be_zero"),
            (lambda: e.id == U128, "id_must_not_be_int_max"),
            (lambda: e.flags & A_DMNEC and e.flags & A_CMNED, "flags_are_mutually_exclusive"),
            (lambda: e.debits_pending != 0, "debits_pending_must_be_zero"),
            (lambda: e.debits_posted != 0, "debits_posted_must_be_zero"),
            (lambda: e.credits_pending != 0, "credits_pending_must_be_zero"),
            (lambda: e.credits_posted != 0, "credits_posted_must_be_zero"),
            (lambda: e.ledger == 0, "ledger_must_not_be_zero"),
            (lambda: e.code == 0, "code_must_not_be_zero"),
        ]
        for failed, name in rules:
            if failed():
                return name
        if old is not None:
            for key, value in (("flags", e.flags), ("user_data_128", e.user_data_128),
                               ("user_data_64", e.user_data_64),
                               ("user_data_32", e.user_data_32), ("ledger", e.ledger),
                               ("code", e.code)):
                if old[key] != value:
                    return f"exists_with_different_{key}"
            return "exists"
        self.accounts[e.id] = {
            "flags": e.flags, "user_data_128": e.user_data_128, "user_data_64": e.user_data_64,
            "user_data_32": e.user_data_32, "ledger": e.ledger, "code": e.code,
            "timestamp": ts, "dp": 0, "dpo": 0, "cp": 0, "cpo": 0,
            "closed": bool(e.flags & A_CLOSED),
        }
        return "ok"

    # -- one transfer --

    def _transfer(self, e: Any, ts: int) -> str:
        fields = [(e.id, 128), (e.debit_account_id, 128), (e.credit_account_id, 128),
                  (e.amount, 128), (e.pending_id, 128), (e.user_data_128, 128),
                  (e.user_data_64, 64), (e.timestamp, 64), (e.user_data_32, 32),
                  (e.timeout, 32), (e.ledger, 32), (e.code, 16), (e.flags, 16)]
        if any(not 0 <= v < 1 << w for v, w in fields):
            return "field_out_of_range"
        if e.timestamp:
            return "timestamp_must_be_zero"
        if e.flags >= 256:
            return "reserved_flag"
        if e.id == 0:
            return "id_must_not_be_zero"
        if e.id == U128:
            return "id_must_not_be_int_max"
        if e.id in self.transfers:
            return self._exists(e, self.transfers[e.id])
        if e.id in self.failed:
            return "id_already_failed"
        if e.flags & (POST | VOID):
            return self._resolve(e, ts)
        rules = [
            (e.debit_account_id == 0, "debit_account_id_must_not_be_zero"),
            (e.debit_account_id == U128, "debit_account_id_must_not_be_int_max"),
            (e.credit_account_id == 0, "credit_account_id_must_not_be_zero"),
            (e.credit_account_id == U128, "credit_account_id_must_not_be_int_max"),
            (e.debit_account_id == e.credit_account_id, "accounts_must_be_different"),
            (e.pending_id != 0, "pending_id_must_be_zero"),
            (e.timeout and not e.flags & PENDING, "timeout_reserved_for_pending_transfer"),
            (e.flags & (CLOSE_D | CLOSE_C) and not e.flags & PENDING,
             "closing_transfer_must_be_pending"),
            (e.ledger == 0, "ledger_must_not_be_zero"),
            (e.code == 0, "code_must_not_be_zero"),
        ]
        for failed, name in rules:
            if failed:
                return name
        dr = self.accounts.get(e.debit_account_id)
        if dr is None:
            return "debit_account_not_found"
        cr = self.accounts.get(e.credit_account_id)
        if cr is None:
            return "credit_account_not_found"
        if dr["ledger"] != cr["ledger"]:
            return "accounts_must_have_the_same_ledger"
        if e.ledger != dr["ledger"]:
            return "transfer_must_have_the_same_ledger_as_accounts"
        if dr["closed"]:
            return "debit_account_already_closed"
        if cr["closed"]:
            return "credit_account_already_closed"
        amount = e.amount
        if e.flags & BAL_D:
            amount = min(amount, max(0, dr["cpo"] - dr["dp"] - dr["dpo"]))
        if e.flags & BAL_C:
            amount = min(amount, max(0, cr["dpo"] - cr["cp"] - cr["cpo"]))
        pend = bool(e.flags & PENDING)
        dr_key, cr_key = ("dp", "cp") if pend else ("dpo", "cpo")
        checks = [
            (dr[dr_key] + amount > U128,
             "overflows_debits_pending" if pend else "overflows_debits_posted"),
            (cr[cr_key] + amount > U128,
             "overflows_credits_pending" if pend else "overflows_credits_posted"),
            (dr["dp"] + dr["dpo"] + amount > U128, "overflows_debits"),
            (cr["cp"] + cr["cpo"] + amount > U128, "overflows_credits"),
            (pend and e.timeout and ts + e.timeout * SECOND >= 1 << 63, "overflows_timeout"),
            (dr["flags"] & A_DMNEC and dr["dp"] + dr["dpo"] + amount > dr["cpo"],
             "exceeds_credits"),
            (cr["flags"] & A_CMNED and cr["cp"] + cr["cpo"] + amount > cr["dpo"],
             "exceeds_debits"),
        ]
        for failed, name in checks:
            if failed:
                return name
        dr[dr_key] += amount
        cr[cr_key] += amount
        if pend:
            self.status[e.id] = "pending"
            if e.flags & CLOSE_D:
                dr["closed"] = True
            if e.flags & CLOSE_C:
                cr["closed"] = True
        self.transfers[e.id] = {
            "debit": e.debit_account_id, "credit": e.credit_account_id, "amount": amount,
            "pending_id": 0, "user_data_128": e.user_data_128, "user_data_64": e.user_data_64,
            "user_data_32": e.user_data_32, "timeout": e.timeout, "ledger": e.ledger,
            "code": e.code, "flags": e.flags, "timestamp": ts,
        }
        return "ok"

    def _resolve(self, e: Any, ts: int) -> str:
        posting = bool(e.flags & POST)
        if e.flags & (PENDING | BAL_D | BAL_C | CLOSE_D | CLOSE_C) or (
                e.flags & POST and e.flags & VOID):
            return "flags_are_mutually_exclusive"
        if e.pending_id == 0:
            return "pending_id_must_not_be_zero"
        if e.pending_id == U128:
            return "pending_id_must_not_be_int_max"
        if e.pending_id == e.id:
            return "pending_id_must_be_different"
        if e.timeout:
            return "timeout_reserved_for_pending_transfer"
        p = self.transfers.get(e.pending_id)
        if p is None:
            return "pending_transfer_not_found"
        if not p["flags"] & PENDING:
            return "pending_transfer_not_pending"
        for mine, theirs, name in ((e.debit_account_id, p["debit"], "debit_account_id"),
                                   (e.credit_account_id, p["credit"], "credit_account_id"),
                                   (e.ledger, p["ledger"], "ledger"),
                                   (e.code, p["code"], "code")):
            if mine and mine != theirs:
                return f"pending_transfer_has_different_{name}"
        amount = e.amount
        if posting:
            if amount == U128:
                amount = p["amount"]
            elif amount > p["amount"]:
                return "exceeds_pending_transfer_amount"
        elif amount == 0:
            amount = p["amount"]
        elif amount != p["amount"]:
            return "pending_transfer_has_different_amount"
        st = self.status[e.pending_id]
        if st == "posted":
            return "pending_transfer_already_posted"
        if st == "voided":
            return "pending_transfer_already_voided"
        if st == "expired" or (p["timeout"] and p["timestamp"] + p["timeout"] * SECOND <= ts):
            return "pending_transfer_expired"
        dr, cr = self.accounts[p["debit"]], self.accounts[p["credit"]]
        if posting:  # (so a closing transfer can only be voided, as in TigerBeetle)
            if dr["closed"]:
                return "debit_account_already_closed"
            if cr["closed"]:
                return "credit_account_already_closed"
            if dr["dpo"] + amount > U128:
                return "overflows_debits_posted"
            if cr["cpo"] + amount > U128:
                return "overflows_credits_posted"
        dr["dp"] -= p["amount"]
        cr["cp"] -= p["amount"]
        if posting:
            dr["dpo"] += amount
            cr["cpo"] += amount
            self.status[e.pending_id] = "posted"
        else:
            self.status[e.pending_id] = "voided"
            if p["flags"] & CLOSE_D:
                dr["closed"] = False
            if p["flags"] & CLOSE_C:
                cr["closed"] = False
        self.transfers[e.id] = {
            "debit": p["debit"], "credit": p["credit"], "amount": amount,
            "pending_id": e.pending_id, "user_data_128": e.user_data_128 or p["user_data_128"],
            "user_data_64": e.user_data_64 or p["user_data_64"],
            "user_data_32": e.user_data_32 or p["user_data_32"], "timeout": 0,
            "ledger": p["ledger"], "code": p["code"], "flags": e.flags, "timestamp": ts,
        }
        return "ok"

    def _exists(self, e: Any, t: dict[str, Any]) -> str:
        resolving = bool(e.flags & (POST | VOID))

        def differs(mine: int, theirs: int) -> bool:
            return mine != theirs and not (resolving and mine == 0)

        if e.flags != t["flags"]:
            return "exists_with_different_flags"
        if e.pending_id != t["pending_id"]:
            return "exists_with_different_pending_id"
        if e.timeout != t["timeout"]:
            return "exists_with_different_timeout"
        if differs(e.debit_account_id, t["debit"]):
            return "exists_with_different_debit_account_id"
        if differs(e.credit_account_id, t["credit"]):
            return "exists_with_different_credit_account_id"
        if e.flags & POST:  # AMOUNT_MAX also names a post of the whole reservation
            full = self.transfers[t["pending_id"]]["amount"]
            same = e.amount == t["amount"] or (e.amount == U128 and t["amount"] == full)
        elif e.flags & VOID:
            same = e.amount in (0, t["amount"])
        elif e.flags & (BAL_D | BAL_C):
            same = e.amount >= t["amount"]
        else:
            same = e.amount == t["amount"]
        if not same:
            return "exists_with_different_amount"
        for key in ("user_data_128", "user_data_64", "user_data_32", "ledger", "code"):
            if differs(getattr(e, key), t[key]):
                return f"exists_with_different_{key}"
        return "exists"

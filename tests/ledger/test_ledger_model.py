"""Model-based test: the ledger against a tiny independent reference (refledger.py).

Hypothesis drives random batches of accounts and transfers (every flag,
valid and invalid fields, linked chains, two-phase with timeouts), pulses,
leader clocks that stand still or jump, and snapshot/restore cycles. After
every step: the same result codes, balances and pending statuses as the
reference; debits equal credits per ledger, pending and posted; no account
beyond its balance limit; no id ever changes meaning.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from refledger import RefLedger

from cellmesh.ledger import (
    Account,
    AccountFlags,
    AccountResult,
    ApplyMeta,
    CreateAccounts,
    CreateAccountsReply,
    CreateTransfers,
    CreateTransfersReply,
    LedgerState,
    PendingStatus,
    Pulse,
    PulseReply,
    Transfer,
    TransferResult,
)

SECOND = 1_000_000_000
U128 = (1 << 128) - 1
ACCOUNT_IDS = range(1, 7)
TRANSFER_IDS = range(1, 400)

small = st.sampled_from([0, 0, 1, 2])
aid = st.sampled_from(list(ACCOUNT_IDS))
account_events = st.one_of(
    # Mostly valid accounts on ledger 1 (some on 2), any flags combination...
    st.builds(Account, id=aid, ledger=st.sampled_from([1, 1, 1, 2]), code=st.just(1),
              flags=st.sampled_from([0, 0, 1, 2, 4, 8, 2 | 1, 4 | 1]), user_data_64=small),
    # ...and anything at all, now and then.
    st.builds(
        Account,
        id=st.sampled_from([*ACCOUNT_IDS, 0, U128, -1]),
        ledger=st.sampled_from([1, 2, 0, 1 << 32]),
        code=st.sampled_from([1, 0]),
        flags=st.sampled_from([0, 6, 16, -1]),
        user_data_128=small, user_data_32=small,
        debits_pending=st.sampled_from([0, 1]), credits_posted=st.sampled_from([0, 1]),
        timestamp=st.sampled_from([0, 7]),
    ),
)
maybe_linked = st.sampled_from([0, 0, 0, 1])
amounts = st.one_of(st.integers(min_value=0, max_value=300),
                    st.sampled_from([U128, 1 << 127, U128 - 10]))
live_account = st.sampled_from([1, 1, 2, 2, 3, 3, 4, 4, 5, 6])
_FIELDS = ("debit_account_id", "credit_account_id", "amount", "pending_id", "user_data_128",
           "user_data_64", "user_data_32", "timeout", "ledger", "code", "flags")


@st.composite
def transfer_events(
    draw: st.DrawFn, known: dict[int, dict[str, Any]], pending: list[int], fresh: int,
) -> Transfer:
    """A transfer event: mostly plausible ones of each kind, sometimes garbage.

    ``known`` are the reference's transfers (to retry, or to retry with one
    field changed), ``pending`` the ids of pending transfers (to post or void),
    ``fresh`` the first id never used.
    """
    kinds = ["plain"] * 4 + ["pending"] * 3 + ["resolve"] * 3 + ["noise"]
    if known:
        kinds += ["retry"] * 2
    kind = draw(st.sampled_from(kinds))
    linked = draw(maybe_linked)
    new_id = draw(st.integers(min_value=fresh, max_value=fresh + 5))
    if kind == "retry":
        tid = draw(st.sampled_from(sorted(known)))
        t = known[tid]
        fields = {"debit_account_id": t["debit"], "credit_account_id": t["credit"],
                  **{k: t[k] for k in _FIELDS if k in t}}
        if draw(st.booleans()):
            name = draw(st.sampled_from(_FIELDS))
            fields[name] = draw(st.sampled_from([0, 1, 2, fields[name] + 1]))
        return Transfer(id=tid, **fields)
    if kind == "plain":
        flags = draw(st.sampled_from([0, 0, 0, 16, 32, 48])) | linked
        return Transfer(id=new_id, debit_account_id=draw(live_account),
                        credit_account_id=draw(live_account), amount=draw(amounts),
                        ledger=draw(st.sampled_from([1, 1, 1, 2])), code=1, flags=flags,
                        user_data_64=draw(small))
    if kind == "pending":
        flags = 2 | draw(st.sampled_from([0, 0, 0, 0, 16, 64, 128])) | linked
        return Transfer(id=new_id, debit_account_id=draw(live_account),
                        credit_account_id=draw(live_account), amount=draw(amounts), ledger=1,
                        code=1, flags=flags, timeout=draw(st.sampled_from([0, 1, 1, 3, 10])))
    if kind == "resolve":
        flags = draw(st.sampled_from([4, 4, 8])) | linked
        target = draw(st.sampled_from(pending)) if pending else draw(tid_any)
        return Transfer(
            id=new_id, pending_id=target,
            debit_account_id=draw(st.sampled_from([0, 0, 0, 0, 1, 2])),
            credit_account_id=draw(st.sampled_from([0, 0, 0, 0, 1, 2])),
            amount=draw(st.sampled_from([0, 0, 0, 100] if flags & 8 else
                                        [0, U128, U128, 1, 50, 100, 200, 301])),
            ledger=draw(st.sampled_from([0, 0, 0, 1, 2])),
            code=draw(st.sampled_from([0, 0, 0, 1, 2])),
            flags=flags, user_data_32=draw(small))
    return Transfer(
        id=draw(st.sampled_from([new_id, new_id, 0, U128])),
        debit_account_id=draw(st.sampled_from([1, 2, 0, 9, U128])),
        credit_account_id=draw(st.sampled_from([1, 2, 0, 9, U128])),
        amount=draw(st.sampled_from([0, 5, -1, 1 << 128])),
        pending_id=draw(st.sampled_from([0, 0, 3, U128, new_id])),
        flags=draw(st.integers(min_value=-2, max_value=300)),
        timeout=draw(st.sampled_from([0, 0, 1, 1 << 32])),
        ledger=draw(st.sampled_from([1, 1, 0])), code=draw(st.sampled_from([1, 1, 0, 1 << 16])),
        user_data_128=draw(small), timestamp=draw(st.sampled_from([0, 0, 0, 1])),
    )


tid_any = st.integers(min_value=1, max_value=5)
# Leader clock steps: stand still, go back, small and large jumps.
clock_steps = st.sampled_from([0, -SECOND, 1, SECOND // 2, SECOND, 2 * SECOND, 5 * SECOND])

_ACCOUNT_NAMES = {r.name.lower(): int(r) for r in AccountResult}
_TRANSFER_NAMES = {r.name.lower(): int(r) for r in TransferResult}
_STATUS_NAMES = {s.name.lower(): int(s) for s in PendingStatus}


class LedgerMachine(RuleBasedStateMachine):
    """The ledger and the reference, fed the same commands."""

    def __init__(self) -> None:
        super().__init__()
        self.state = LedgerState()
        self.ref = RefLedger()
        self.index = 0
        self.leader_clock = 1_700_000_000 * SECOND
        self.seen_accounts: dict[int, tuple[int, ...]] = {}
        self.seen_transfers: dict[int, Transfer] = {}
        self.next_id = 1

    def _meta(self, step: int) -> ApplyMeta:
        self.index += 1
        self.leader_clock += step
        return ApplyMeta(index=self.index, timestamp=self.leader_clock)

    @initialize()
    def open_accounts(self) -> None:
        """Accounts 1 and 2 without limits, 3 whose debits and 4 whose credits are limited."""
        self.create_accounts([Account(id=1, ledger=1, code=1), Account(id=2, ledger=1, code=1),
                              Account(id=3, ledger=1, code=1, flags=2),
                              Account(id=4, ledger=1, code=1, flags=4)], 0)

    @rule(events=st.lists(account_events, min_size=0, max_size=6), step=clock_steps)
    def create_accounts(self, events: list[Account], step: int) -> None:
        meta = self._meta(step)
        reply = self.state.apply(CreateAccounts(events=events), meta)
        assert isinstance(reply, CreateAccountsReply)
        expected = self.ref.create_accounts(events, meta.timestamp)
        assert reply.results == [_ACCOUNT_NAMES[n] for n in expected]

    @rule(data=st.data(), step=clock_steps)
    def create_transfers(self, data: st.DataObject, step: int) -> None:
        fresh = self.next_id
        self.next_id += 10
        pending = sorted(self.ref.status)
        events = data.draw(st.lists(transfer_events(self.ref.transfers, pending, fresh),
                                    max_size=10))
        meta = self._meta(step)
        reply = self.state.apply(CreateTransfers(events=events), meta)
        assert isinstance(reply, CreateTransfersReply)
        expected = self.ref.create_transfers(events, meta.timestamp)
        assert reply.results == [_TRANSFER_NAMES[n] for n in expected], events

    @rule(step=clock_steps)
    def pulse(self, step: int) -> None:
        meta = self._meta(step)
        reply = self.state.apply(Pulse(), meta)
        assert isinstance(reply, PulseReply)
        assert reply.expired == self.ref.pulse(meta.timestamp)

    @rule()
    def snapshot_and_restore(self) -> None:
        data = self.state.snapshot()
        restored = LedgerState.from_snapshot(data)
        assert restored.snapshot() == data
        self.state = restored  # carry on with the restored replica

    @invariant()
    def same_as_reference(self) -> None:
        accounts = {a.id: a for a in self.state.lookup_accounts(list(ACCOUNT_IDS))}
        assert set(accounts) == set(self.ref.accounts)
        for aid, model in self.ref.accounts.items():
            a = accounts[aid]
            assert (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted) == (
                model["dp"], model["dpo"], model["cp"], model["cpo"])
            assert bool(a.flags & AccountFlags.CLOSED) == model["closed"]
        transfers = {t.id: t for t in self.state.lookup_transfers(list(TRANSFER_IDS))}
        assert set(transfers) == set(self.ref.transfers)
        for tid, model in self.ref.transfers.items():
            t = transfers[tid]
            assert (t.debit_account_id, t.credit_account_id, t.amount, t.timestamp) == (
                model["debit"], model["credit"], model["amount"], model["timestamp"])
        for tid, name in self.ref.status.items():
            assert self.state.pending_status(tid) == _STATUS_NAMES[name]
        assert self.state.clock == self.ref.clock

    @invariant()
    def books_balance(self) -> None:
        for total in self.state.totals():
            assert total.debits_pending == total.credits_pending
            assert total.debits_posted == total.credits_posted

    @invariant()
    def no_limit_exceeded(self) -> None:
        for a in self.state.lookup_accounts(list(ACCOUNT_IDS)):
            if a.flags & AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS:
                assert a.debits_pending + a.debits_posted <= a.credits_posted
            if a.flags & AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS:
                assert a.credits_pending + a.credits_posted <= a.debits_posted

    @invariant()
    def ids_never_change_meaning(self) -> None:
        for a in self.state.lookup_accounts(list(ACCOUNT_IDS)):
            fixed = (a.ledger, a.code, a.user_data_128, a.user_data_64, a.user_data_32,
                     a.timestamp, a.flags & ~AccountFlags.CLOSED)
            assert self.seen_accounts.setdefault(a.id, fixed) == fixed
        for t in self.state.lookup_transfers(list(TRANSFER_IDS)):
            assert self.seen_transfers.setdefault(t.id, t) == t


LedgerMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_model_ledger_matches_reference = LedgerMachine.TestCase

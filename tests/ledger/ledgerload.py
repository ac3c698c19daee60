"""A Jepsen-style bank on the ledger cell through a real root, and the checks after it.

:class:`LedgerBank` runs concurrent clients against the replicated cell
``ledger`` (``cellmesh.ledger:Ledger``): customers whose debits must not
exceed their credits, funded once from an operator account, then moving
money between each other with single transfers, linked chains (all or
nothing) and two-phase transfers (pending, then posted in full or in part,
or voided). It records the fate of every transfer id and checks what issue
12 promises:

* **every read conserves money**: the customers' posted balances sum to
  the funding, every ledger balances (debits equal credits, posted and
  pending) and no customer is beyond its limit;
* **every acknowledged transfer is applied exactly once**: an id answered
  ``ok`` is stored (with its amount) and counted once in the balances --
  each account's balances equal the sum over its stored history; an id
  answered with a failure, or never sent, is not stored;
* **client retries never double-apply**: batches are resubmitted (after an
  acknowledged success: every event answers ``exists``; after an unknown
  outcome: each event answers ``ok`` or ``exists``), and the synapse resends
  in its session across leader kills;
* the replicas end byte-identical (:meth:`RootGroup.identical`) and
  ``cellmesh ledger check`` passes.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Final

import attrs

from cellmesh import Synapse
from cellmesh.actors.root import Root
from cellmesh.errors import CellmeshError, CellUnavailable, OutcomeUnknown
from cellmesh.ledger import (
    AMOUNT_MAX,
    Account,
    AccountFlags,
    LedgerClient,
    PendingStatus,
    Transfer,
    TransferFlags,
    TransferResult,
)
from cellmesh.testing.rootfaults import Clients

GROUP: Final = "ledger"
LEDGER: Final = 1
OPERATOR: Final = 1
CUSTOMERS: Final = tuple(range(10, 18))
START: Final = 1_000
TOTAL: Final = START * len(CUSTOMERS)
_OK: Final = TransferResult.OK
_EXISTS: Final = TransferResult.EXISTS
_LINKED: Final = int(TransferFlags.LINKED)
_PENDING: Final = int(TransferFlags.PENDING)
_POST: Final = int(TransferFlags.POST_PENDING_TRANSFER)
_VOID: Final = int(TransferFlags.VOID_PENDING_TRANSFER)


def ledger_toml(replicas: int = 3) -> str:
    """The manifest: the ledger that ships with cellmesh as a replicated cell."""
    return (
        f'[cells.{GROUP}]\ndna = "ledgerdna.py"\nentry = "cellmesh.ledger:Ledger"\n'
        f"replicas = {replicas}\nstart_timeout = 60\nstandby = true\n"
    )


#: The manifest's DNA: any code will do, the ledger's class comes with cellmesh.
DNA: Final = '"""The mesh\'s own code (the ledger cell ships with cellmesh)."""\n'


def _move(tid: int, debit: int, credit: int, amount: int, flags: int = 0) -> Transfer:
    return Transfer(id=tid, debit_account_id=debit, credit_account_id=credit, amount=amount,
                    ledger=LEDGER, code=1, flags=flags)


async def open_books(root: Root) -> None:
    """Create the operator and the customers; fund each customer with ``START``."""
    async with Synapse.grow(GROUP, socket_dir=root.paths.socket_dir) as syn:
        ledger = LedgerClient.over(syn)
        limited = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
        made = await ledger.create_accounts(
            [Account(id=OPERATOR, ledger=LEDGER, code=1)]
            + [Account(id=c, ledger=LEDGER, code=2, flags=limited) for c in CUSTOMERS])
        assert made.ok, made.failures()
        funded = await ledger.create_transfers(
            [_move(1_000 + c, OPERATOR, c, START) for c in CUSTOMERS])
        assert funded.ok, funded.failures()


@attrs.define(eq=False)
class LedgerBank:
    """Concurrent clients and what they saw (module doc)."""

    root: Root
    clients: int = 5
    seed: int = 12
    #: transfer id -> the event sent (every id is sent with one meaning only)
    sent: dict[int, Transfer] = attrs.Factory(dict)
    #: transfer id -> the code it was answered with (ok, or a failure)
    answered: dict[int, TransferResult] = attrs.Factory(dict)
    unknown: set[int] = attrs.Factory(set)
    unsent: set[int] = attrs.Factory(set)
    bad_reads: list[str] = attrs.Factory(list)
    reads: int = 0
    retries: int = 0
    errors: list[str] = attrs.Factory(list)
    #: Runs the clients (``driver.run``, ``.progress``, ``.stop``: what the nemesis drives).
    driver: Clients = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.driver = Clients(client=self._client, count=self.clients)

    async def _client(self, client: int) -> None:
        rng = random.Random(self.seed * 1000 + client)
        ids = iter(range((client + 1) << 32, (client + 2) << 32))
        held: list[Transfer] = []  # this client's acknowledged pending transfers
        async with Synapse.grow(GROUP, socket_dir=self.root.paths.socket_dir,
                                client_name=f"client-{client}") as syn:
            ledger = LedgerClient.over(syn)
            while not self.driver.stopping:
                roll = rng.random()
                if roll < 0.2:
                    await self._read(ledger)
                    continue
                src, dst, third = rng.sample(CUSTOMERS, 3)
                amount = rng.randint(1, 120)
                if roll < 0.55:
                    batch = [_move(next(ids), src, dst, amount)]
                elif roll < 0.7:  # a chain: both legs or neither
                    batch = [_move(next(ids), src, dst, amount, _LINKED),
                             _move(next(ids), dst, third, rng.randint(1, 120))]
                elif roll < 0.8 or not held:  # phase one
                    batch = [_move(next(ids), src, dst, amount, _PENDING)]
                else:  # phase two: post (all or part) or void
                    pending = held.pop(rng.randrange(len(held)))
                    kind = rng.choice((_POST, _POST, _VOID))
                    part = (AMOUNT_MAX if rng.random() < 0.5 else rng.randint(0, pending.amount))
                    batch = [Transfer(id=next(ids), pending_id=pending.id,
                                      amount=part if kind == _POST else 0, flags=kind)]
                results = await self._write(ledger, batch)
                if results is not None and batch[0].flags & _PENDING and results[0] == _OK:
                    held.append(batch[0])
                if results is not None and all(r == _OK for r in results) and rng.random() < 0.1:
                    # the application retries a batch it already saw succeed
                    again = await self._write(ledger, batch, retry=True)
                    if again is not None and set(again) != {_EXISTS}:
                        self.bad_reads.append(f"retry of {[t.id for t in batch]}: {again}")

    async def _write(self, ledger: LedgerClient, batch: list[Transfer], *,
                     retry: bool = False) -> list[TransferResult] | None:
        ids = [t.id for t in batch]
        if not retry:
            for t in batch:
                self.sent[t.id] = t
        try:
            results = await ledger.create_transfers(batch)
        except OutcomeUnknown:
            self.unknown.update(ids)
            return None
        except CellUnavailable:
            if not retry:
                self.unsent.update(ids)  # it never left: no effect
            return None
        except CellmeshError as exc:
            self.errors.append(f"{ids}: {type(exc).__name__}: {exc}")
            self.unknown.update(ids)
            return None
        codes = list(results.codes)
        if retry:
            self.retries += 1
            return codes
        for tid, code in zip(ids, codes, strict=True):
            self.answered[tid] = code
        self.driver.acked()
        return codes

    async def _read(self, ledger: LedgerClient) -> None:
        try:
            found = await ledger.lookup_accounts(list(CUSTOMERS))
            books = await ledger.check()
        except CellmeshError:
            return  # a read that never answered changed nothing
        self.reads += 1
        problem = read_problem(found, books.ok)
        if problem:
            self.bad_reads.append(problem)

    # ------------------------------------------------------------ after the run

    async def retry_unknown(self) -> None:
        """Resubmit every write whose outcome was unknown: each event is ``ok`` (it had not
        been applied) or ``exists`` (it had) -- never applied twice."""
        async with Synapse.grow(GROUP, socket_dir=self.root.paths.socket_dir) as syn:
            ledger = LedgerClient.over(syn)
            for tid in sorted(self.unknown):
                event = self.sent[tid]
                if event.flags & _LINKED:
                    continue  # retried with the rest of its chain (below)
                chain = [tid]
                while chain[0] - 1 in self.sent and self.sent[chain[0] - 1].flags & _LINKED:
                    chain.insert(0, chain[0] - 1)
                results = await ledger.create_transfers([self.sent[i] for i in chain])
                self.retries += 1
                for i, code in zip(chain, results.codes, strict=True):
                    # exists: it had been applied (now it is known); anything else is
                    # this copy's own outcome (id_already_failed: the first failed)
                    self.answered[i] = _OK if code == _EXISTS else code
                self.unknown.difference_update(chain)

    async def check(self, cli_check: str) -> None:
        """Every promise of the module doc, once the group is quiet again."""
        assert self.bad_reads == [], f"bad reads: {self.bad_reads[:3]}"
        assert self.reads > 0 and self.answered, "the workload did nothing"
        async with Synapse.grow(GROUP, socket_dir=self.root.paths.socket_dir) as syn:
            ledger = LedgerClient.over(syn)
            found = await ledger.lookup_accounts(list(CUSTOMERS))
            books = await ledger.check()
            assert read_problem(found, books.ok) is None, read_problem(found, books.ok)
            stored = {t.id: t for t in await _lookup_all(ledger, sorted(self.sent))}
            leaked = sorted(i for i in self.unsent if i in stored)
            assert leaked == [], f"transfers that never left the client were applied: {leaked}"
            missing = sorted(i for i, c in self.answered.items() if c == _OK and i not in stored)
            assert missing == [], f"acknowledged transfers not applied: {missing[:10]}"
            failed = sorted(i for i, c in self.answered.items() if c != _OK and i in stored)
            assert failed == [], f"transfers answered with a failure were applied: {failed[:10]}"
            for tid, t in stored.items():
                sent = self.sent[tid]
                if not sent.flags & (_POST | _VOID):
                    assert (t.debit_account_id, t.credit_account_id, t.amount) == (
                        sent.debit_account_id, sent.credit_account_id, sent.amount), t
            # exactly once: every account's balances are the sums over its stored history
            for account in await ledger.lookup_accounts([OPERATOR, *CUSTOMERS]):
                history = [t async for t in ledger.account_history(account.id)]
                statuses = await ledger.pending_statuses([t.id for t in history])
                assert balances_from(account.id, history, statuses) == (
                    account.debits_pending, account.debits_posted,
                    account.credits_pending, account.credits_posted), account.id
        assert cli_check.startswith("cellmesh: the books of 'ledger' balance"), cli_check


def read_problem(accounts: Sequence[Account], books_ok: bool) -> str | None:
    """What is wrong with one read of every customer (None: money conserved)."""
    if len(accounts) != len(CUSTOMERS):
        return f"a read found {len(accounts)} of {len(CUSTOMERS)} customers"
    net = sum(a.credits_posted - a.debits_posted for a in accounts)
    if net != TOTAL:
        return f"customers hold {net}, not {TOTAL}"
    over = [a.id for a in accounts if a.debits_pending + a.debits_posted > a.credits_posted]
    if over:
        return f"customers beyond their limits: {over}"
    if not books_ok:
        return "CheckBooks: the books do not balance"
    return None


def balances_from(
    account_id: int, history: Sequence[Transfer], statuses: Sequence[PendingStatus | None]
) -> tuple[int, int, int, int]:
    """(debits_pending, debits_posted, credits_pending, credits_posted) recomputed from an
    account's stored transfers: each counted once."""
    dp = dpo = cp = cpo = 0
    for t, status in zip(history, statuses, strict=True):
        debit = t.debit_account_id == account_id
        if t.flags & _PENDING:
            if status is PendingStatus.PENDING:
                dp, cp = (dp + t.amount, cp) if debit else (dp, cp + t.amount)
        elif t.flags & _VOID:
            continue
        elif debit:
            dpo += t.amount
        else:
            cpo += t.amount
    return dp, dpo, cp, cpo


async def _lookup_all(ledger: LedgerClient, ids: list[int]) -> list[Transfer]:
    out: list[Transfer] = []
    for start in range(0, len(ids), 4096):
        out += await ledger.lookup_transfers(ids[start:start + 4096])
    return out


__all__ = ["DNA", "GROUP", "LedgerBank", "ledger_toml", "open_books"]

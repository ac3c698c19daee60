"""A bank workload against a replicated cell run by a real root, and the checks after it.

Used by ``test_replicas_root_bank.py`` and ``test_replicas_root_membership.py``.
:class:`BankLoad` runs concurrent clients against the group ``bank``
(transfers between fixed accounts, and reads of every balance), records the
history for :func:`cellmesh.testing.check_operations` and the fate of every
write id, and checks the promises of issue 11 afterwards:

* every read sums to the total (transfers move money, never make it);
* every acknowledged write was applied exactly once, a write whose outcome
  is unknown at most once, a write that never left the client never;
* the history is linearizable (``BankModel``);
* the replicas converge to byte-identical states (the same digest at the same
  applied index).

Faults and the group-level checks (convergence, byte-identical replicas) come
from :mod:`cellmesh.testing.rootfaults` (``bank(root)`` is the bank's
:class:`~cellmesh.testing.rootfaults.RootGroup`).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from cellmesh import Synapse
from cellmesh.actors.root import Root
from cellmesh.errors import CellmeshError, CellUnavailable, OutcomeUnknown
from cellmesh.testing import Operation, check_operations
from cellmesh.testing.bank import (
    Applied,
    Balances,
    BankModel,
    Deposit,
    GetApplied,
    GetBalances,
    Receipt,
    Transfer,
)
from cellmesh.testing.rootfaults import Clients, RootGroup

GROUP: Final = "bank"
ACCOUNTS: Final = ("a", "b", "c", "d", "e")
START: Final = 100
TOTAL: Final = START * len(ACCOUNTS)


def bank_toml(replicas: int, *, standby: bool = True) -> str:
    """The manifest: ``cellmesh.testing.bank.Bank`` as a replicated cell."""
    return (
        f'[cells.{GROUP}]\ndna = "bankcell.py"\nentry = "bankcell:Bank"\n'
        f"replicas = {replicas}\nstart_timeout = 60\n"
        f"standby = {'true' if standby else 'false'}\n"
    )


def bank(root: Root) -> RootGroup:
    """The bank group of ``root``: its faults and checks (:mod:`cellmesh.testing.rootfaults`)."""
    return RootGroup(root=root, name=GROUP)


async def deposit_all(root: Root) -> None:
    """Give every account ``START`` (ids ``init-<account>``)."""
    async with Synapse.grow(GROUP, socket_dir=root.paths.socket_dir) as syn:
        for account in ACCOUNTS:
            receipt = await syn.fire(Deposit(id=f"init-{account}", account=account, amount=START))
            assert isinstance(receipt, Receipt) and receipt.ok


@attrs.define(eq=False)
class BankLoad:
    """Concurrent clients and what they saw (module doc)."""

    root: Root
    clients: int = 4
    seed: int = 11
    history: list[Operation[tuple[Any, ...], Any]] = attrs.Factory(list)
    acknowledged: set[str] = attrs.Factory(set)
    unknown: set[str] = attrs.Factory(set)
    unsent: set[str] = attrs.Factory(set)
    bad_reads: list[dict[str, int]] = attrs.Factory(list)
    reads: int = 0
    errors: list[str] = attrs.Factory(list)
    #: Reads that raised (left out of the history: a failed read changes nothing).
    read_errors: list[str] = attrs.Factory(list)
    #: Runs the clients (``driver.run``, ``.progress``, ``.stop``: what the nemesis drives).
    driver: Clients = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.driver = Clients(client=self._client, count=self.clients)

    async def _client(self, client: int) -> None:
        rng = random.Random(self.seed * 1000 + client)
        n = 0
        async with Synapse.grow(GROUP, socket_dir=self.root.paths.socket_dir,
                                client_name=f"client-{client}") as syn:
            while not self.driver.stopping:
                n += 1
                if rng.random() < 0.25:
                    await self._read(syn, client)
                else:
                    src, dst = rng.sample(ACCOUNTS, 2)
                    transfer = Transfer(id=f"c{client}-{n}", src=src, dst=dst,
                                        amount=rng.randint(1, 60))
                    await self._transfer(syn, client, transfer)

    async def _transfer(self, syn: Synapse, client: int, transfer: Transfer) -> None:
        wid = transfer.id
        op = ("transfer", transfer.src, transfer.dst, transfer.amount)
        call = trio.current_time()
        try:
            receipt = await syn.fire(transfer)
        except OutcomeUnknown:
            self.unknown.add(wid)
            self.history.append(Operation(client=client, input=op, output=None, call=call,
                                          ret=None))
            return
        except CellUnavailable:
            self.unsent.add(wid)  # it never left: no effect, not in the history
            return
        except CellmeshError as exc:
            self.errors.append(f"{wid}: {type(exc).__name__}: {exc}")
            self.unknown.add(wid)
            self.history.append(Operation(client=client, input=op, output=None, call=call,
                                          ret=None))
            return
        assert isinstance(receipt, Receipt), receipt
        self.acknowledged.add(wid)
        self.history.append(Operation(client=client, input=op, output=receipt.ok, call=call,
                                      ret=trio.current_time()))
        self.driver.acked()

    async def _read(self, syn: Synapse, client: int) -> None:
        call = trio.current_time()
        try:
            reply = await syn.fire(GetBalances())
        except CellmeshError as exc:
            # a read that never answered changed nothing: left out of the history
            self.read_errors.append(f"{type(exc).__name__}: {exc}")
            return
        assert isinstance(reply, Balances), reply
        self.reads += 1
        if sum(reply.balances.values()) != TOTAL:
            self.bad_reads.append(dict(reply.balances))
        self.history.append(Operation(
            client=client, input=("read",), output=tuple(sorted(reply.balances.items())),
            call=call, ret=trio.current_time(),
        ))

    # ------------------------------------------------------------ checks

    async def check(self, *, expect_members: int | None = None) -> None:
        """Every promise of the module doc, once the group is quiet again."""
        root = self.root
        assert self.bad_reads == [], f"reads that do not sum to {TOTAL}: {self.bad_reads[:3]}"
        assert self.reads > 0 and self.acknowledged, "the workload did nothing"
        await bank(root).converge(expect_members=expect_members)
        async with Synapse.grow(GROUP, socket_dir=root.paths.socket_dir) as syn:
            balances = await syn.fire(GetBalances())
            applied = await syn.fire(GetApplied())
        assert isinstance(balances, Balances) and isinstance(applied, Applied)
        assert sum(balances.balances.values()) == TOTAL
        counts = applied.counts
        twice = {w: c for w, c in counts.items() if c != 1}
        assert twice == {}, f"writes applied more than once: {twice}"
        missing = sorted(w for w in self.acknowledged if counts.get(w) != 1)
        assert missing == [], f"acknowledged writes not applied exactly once: {missing[:10]}"
        leaked = sorted(w for w in self.unsent if w in counts)
        assert leaked == [], f"writes that never left the client were applied: {leaked}"
        expected = self.acknowledged | self.unknown | {f"init-{a}" for a in ACCOUNTS}
        strangers = sorted(set(counts) - expected)
        assert strangers == [], f"applied writes nobody sent: {strangers[:10]}"
        initial = tuple(sorted((a, START) for a in ACCOUNTS))
        result = await trio.to_thread.run_sync(
            lambda: check_operations(BankModel(initial=initial), self.history)
        )
        assert result.ok, f"not linearizable ({len(result.failing_part)} operations)"
        await bank(root).identical()


def wal_segments(data_dir: Path) -> list[Path]:
    """The WAL segment files of one replica's data dir."""
    return sorted(data_dir.rglob("wal-*.log"))

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

Faults come from the tests: :func:`kill_replica` (SIGKILL through the root,
as ``cellmesh kill bank/1``), :func:`pause_replica` (SIGSTOP of the whole
sandbox tree for a while, then SIGCONT).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from cellmesh import Synapse
from cellmesh.actors.control import KillCell
from cellmesh.actors.replicated_proteins import StateDigest, StateDigestRequest
from cellmesh.actors.root import Root
from cellmesh.errors import CellmeshError, CellUnavailable, OutcomeUnknown
from cellmesh.sandbox._bwrap import descendants
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


async def until(root: Root, predicate: Callable[[], bool], what: str, timeout: float = 90) -> None:
    """Wait until ``predicate()`` (re-checked on every slot change and stats tick)."""
    with trio.move_on_after(timeout):
        while not predicate():
            async with trio.open_nursery() as nursery:
                for slot in list(root.slots.values()):
                    nursery.start_soon(_wake, slot.changed, nursery.cancel_scope)
                for group in root._replicas.groups.values():
                    nursery.start_soon(_wake, group.changed, nursery.cancel_scope)
        return
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; "
                         f"status: {root.status().cells}")


async def _wake(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


def leader(root: Root) -> int | None:
    """The group's leader as the root sees it (from the replicas' stats)."""
    return root._replicas.groups[GROUP].view().leader


def term(root: Root) -> int:
    """The leader's term as the root sees it (0 without a leader)."""
    return root._replicas.groups[GROUP].view().term or 0


async def new_leader(root: Root, after: int) -> None:
    """Wait for a leader elected after term ``after`` (the killed one may win again:
    restarted from its log, it is as up to date as any)."""
    await until(root, lambda: leader(root) is not None and term(root) > after,
                f"a leader in a term after {after}")


def members(root: Root) -> list[int]:
    return list(root._replicas.groups[GROUP].record.members)


async def kill_replica(root: Root, replica: int) -> None:
    """SIGKILL one replica through the root's control socket (``cellmesh kill bank/i``)."""
    async with Synapse.grow("mitosis", socket_path=root.paths.umbilical) as ctl:
        await ctl.fire(KillCell(name=f"{GROUP}/{replica}"))


def replica_pids(root: Root, replica: int) -> list[int]:
    """Every process of the replica's serving sandbox (bwrap, its init, the runtime)."""
    slot = root.slots[f"{GROUP}/{replica}"]
    assert slot.instance is not None
    pid = root.backend.process_id(slot.instance.cell_id)
    assert pid is not None
    return [pid, *descendants(pid)]


async def pause_replica(root: Root, replica: int, seconds: float) -> None:
    """SIGSTOP the replica's whole process tree for ``seconds``, then SIGCONT it."""
    pids = replica_pids(root, replica)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    try:
        await trio.sleep(seconds)  # the fault itself: a pause longer than an election timeout
    finally:
        for pid in reversed(pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


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
    _progress: int = 0
    _waiters: list[tuple[int, trio.Event]] = attrs.Factory(list)
    _stop: trio.Event = attrs.Factory(trio.Event)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the clients until :meth:`stop`."""
        async with trio.open_nursery() as nursery:
            for client in range(self.clients):
                nursery.start_soon(self._client, client)
            task_status.started()

    def stop(self) -> None:
        """Let each client finish its current operation and end."""
        self._stop.set()

    async def progress(self, more: int) -> None:
        """Wait until ``more`` further writes have been acknowledged."""
        event = trio.Event()
        self._waiters.append((self._progress + more, event))
        with trio.fail_after(120):
            await event.wait()

    def _acked(self) -> None:
        self._progress += 1
        for goal, event in list(self._waiters):
            if self._progress >= goal:
                event.set()
                self._waiters.remove((goal, event))

    async def _client(self, client: int) -> None:
        rng = random.Random(self.seed * 1000 + client)
        n = 0
        async with Synapse.grow(GROUP, socket_dir=self.root.paths.socket_dir,
                                client_name=f"client-{client}") as syn:
            while not self._stop.is_set():
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
        self._acked()

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
        await converge(root, expect_members=expect_members)
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
        await identical(root)


async def converge(root: Root, *, expect_members: int | None = None) -> None:
    """Wait until every member runs, votes, and has applied the leader's whole log."""

    def done() -> bool:
        group = root._replicas.groups[GROUP]
        stats = group.stats()
        view = group.view()
        if view.leader is None or set(stats) != set(group.record.members):
            return False
        if expect_members is not None and len(group.record.members) != expect_members:
            return False
        ends = {(s.commit_index, s.applied_index) for s in stats.values()}
        return len(ends) == 1 and next(iter(ends))[1] >= (view.leader_last_index or 0)

    await until(root, done, "the replicas to converge")


async def digests(root: Root) -> dict[int, StateDigest]:
    """Every member's state digest, asked on its peer socket."""
    out: dict[int, StateDigest] = {}
    for replica in members(root):
        path = root.paths.socket_dir / ".replicas" / GROUP / f"{replica}.sock"
        async with Synapse.grow(GROUP, socket_path=path, client_name="test") as syn:
            digest = await syn.fire(StateDigestRequest())
        assert isinstance(digest, StateDigest)
        out[replica] = digest
    return out


async def identical(root: Root) -> None:
    """The members' replicated states are byte-identical (same digest, same index).

    Entries may still arrive after the workload (a closing client's session
    goodbye is one): the digests are compared once every member has applied
    the same index.
    """
    group = root._replicas.groups[GROUP]
    with trio.fail_after(60):
        while True:
            found = await digests(root)
            target = max(d.applied_index for d in found.values())
            if all(d.applied_index == target for d in found.values()):
                break
            # a member is applying the last entries: wait for its stats to say so
            await until(root, lambda t=target: all(
                s.applied_index >= t for s in group.stats().values()
            ), f"every replica to apply index {target}")
    kinds = {(d.applied_index, d.sha256, d.size) for d in found.values()}
    assert len(kinds) == 1, f"replicas differ: {found}"


def wal_segments(data_dir: Path) -> list[Path]:
    """The WAL segment files of one replica's data dir."""
    return sorted(data_dir.rglob("wal-*.log"))

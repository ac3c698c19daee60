"""The replicated mode of ``cellmesh bench ledger``: the ledger cell, 3 replicas, fsync.

Theory of operation
-------------------
Each round starts a fresh root in this process serving
``cellmesh.ledger:Ledger`` with ``replicas = 3`` (under bwrap by default;
each replica fsyncs its write-ahead log before it acknowledges), then:

1. **Batches.** The set-up commands (untimed), then the measured batches of
   the shared workload (:mod:`cellmesh.bench.ledger`), sent one after the
   other by one client, as SQLite commits them: each batch is one
   ``CreateTransfers`` command, one Raft entry, appended and fsynced by a
   majority and applied by every replica before its reply. Timed per batch
   (wall clock, from the client's send to its reply).
2. **Concurrent clients.** ``clients`` synapses (each its own connection and
   client session) each send single-transfer ``CreateTransfers`` commands
   one after the other, ``single_ops`` in all: throughput, p50/p99 latency,
   and the Raft entries the leader appended meanwhile -- so how many client
   commands shared one entry (the replicated cell's group commit). The plan
   is :func:`cellmesh.bench._ledger_singles.single_plan` and each transfer's
   result code is kept by its index in it: :mod:`cellmesh.bench.ledger` runs
   the same plan through the SQLite baselines of this row
   (:mod:`cellmesh.bench._ledger_singles`) in the same round and compares
   their codes with these.

Result codes: expiry follows the leader's clock, so the replicated run's
one-second timeouts fall due after other batches than in the pure run (whose
batches are 0.1 s of log time apart). The codes are therefore checked
against a *pure replay* of the same commands at the timestamps the leader
gave them (each reply names its batch's first timestamp): replicated and
pure must agree event for event. How many codes differ from the pure run's
is reported too (timing, not a fault).
"""

from __future__ import annotations

import time
from typing import Any, Final

import attrs
import trio

from ..ledger import (
    ApplyMeta,
    CreateAccounts,
    CreateAccountsReply,
    CreateTransfers,
    CreateTransfersReply,
    LedgerClient,
    LedgerState,
)
from ..transport.synapse import Synapse
from ._ledger_singles import single_plan
from ._stats import median, percentile
from .replicated import open_root_group

GROUP: Final = "ledger"
ENTRY: Final = "cellmesh.ledger:Ledger"
DNA: Final = '"""The bench mesh\'s own code: the ledger cell ships with cellmesh."""\n'


@attrs.frozen(kw_only=True)
class ReplicatedParams:
    """What the replicated mode does beside the shared workload."""

    clients: int = 64
    single_ops: int = 6_400
    sandbox: str = "bwrap"


@attrs.define
class ReplicatedRound:
    """One round's figures: the batches and the concurrent clients."""

    batch_wall: list[float] = attrs.Factory(list)
    results: list[list[int]] = attrs.Factory(list)
    replay_agrees: bool = True
    single_seconds: float = 0.0
    single_latencies: list[float] = attrs.Factory(list)
    single_ok: int = 0
    #: The concurrent clients' result codes, by index in their plan.
    single_results: list[int] = attrs.Factory(list)
    single_entries: int = 0
    batch_entries: int = 0


async def _apply(ledger: LedgerClient, command: CreateAccounts | CreateTransfers) -> tuple[
        list[int], int]:
    if isinstance(command, CreateAccounts):
        res_a = await ledger.create_accounts(command.events)
        return [int(c) for c in res_a.codes], res_a.timestamp
    res_t = await ledger.create_transfers(command.events)
    return [int(c) for c in res_t.codes], res_t.timestamp


def _replay(commands: list[CreateAccounts | CreateTransfers], timestamps: list[int]) -> list[
        list[int]]:
    """The pure ledger's codes for ``commands`` at the leader's timestamps."""
    state = LedgerState()
    out = []
    for k, (command, ts) in enumerate(zip(commands, timestamps, strict=True)):
        reply = state.apply(command, ApplyMeta(index=k + 1, timestamp=ts))
        assert isinstance(reply, CreateAccountsReply | CreateTransfersReply), reply
        out.append(reply.results)
    return out


async def _singles(socket_dir: Any, accounts: list[int], params: ReplicatedParams,
                   rnd: ReplicatedRound, seed: int) -> None:
    plan = single_plan(accounts, params.single_ops, seed)
    rnd.single_results = [-1] * len(plan)
    work = iter(enumerate(plan))

    async def client(syn: Synapse) -> None:
        ledger = LedgerClient.over(syn)
        for n, transfer in work:
            started = time.perf_counter()
            results = await ledger.create_transfers([transfer])
            rnd.single_latencies.append(time.perf_counter() - started)
            rnd.single_ok += results.ok
            rnd.single_results[n] = int(results.codes[0])

    async with trio.open_nursery() as holders:
        syns: list[Synapse] = []
        for _ in range(params.clients):
            syns.append(await holders.start(_hold, socket_dir))
        for syn in syns:  # open the sessions outside the measurement
            await LedgerClient.over(syn).lookup_accounts([accounts[0]])
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for syn in syns:
                nursery.start_soon(client, syn)
        rnd.single_seconds = time.perf_counter() - started
        holders.cancel_scope.cancel()


async def _hold(socket_dir: Any, *, task_status: trio.TaskStatus[Synapse]) -> None:
    async with Synapse.grow(GROUP, socket_dir=socket_dir, client_name="bench") as syn:
        task_status.started(syn)
        await trio.sleep_forever()


async def _round(setup: list[CreateAccounts | CreateTransfers], batches: list[CreateTransfers],
                 accounts: list[int], params: ReplicatedParams, seed: int) -> ReplicatedRound:
    rnd = ReplicatedRound()
    async with open_root_group(params.sandbox, name=GROUP, entry=ENTRY, dna=DNA) as (root, admin):
        socket_dir = root.paths.socket_dir
        async with Synapse.grow(GROUP, socket_dir=socket_dir, client_name="bench") as syn:
            ledger = LedgerClient.over(syn)
            stamps = []
            for command in setup:
                codes, ts = await _apply(ledger, command)
                assert not any(codes), "a set-up command failed in the replicated ledger"
                stamps.append(ts)
            leader = await admin.leader()
            before = (await admin.stats(leader)).last_index
            for batch in batches:
                started = time.perf_counter()
                codes, ts = await _apply(ledger, batch)
                rnd.batch_wall.append(time.perf_counter() - started)
                rnd.results.append(codes)
                stamps.append(ts)
            rnd.batch_entries = (await admin.stats(leader)).last_index - before
        replayed = await trio.to_thread.run_sync(_replay, [*setup, *batches], stamps)
        rnd.replay_agrees = replayed[len(setup):] == rnd.results
        leader = await admin.leader()
        before = (await admin.stats(leader)).last_index
        await _singles(socket_dir, accounts, params, rnd, seed)
        rnd.single_entries = (await admin.stats(leader)).last_index - before
    return rnd


def run_replicated(
    setup: list[CreateAccounts | CreateTransfers], batches: list[CreateTransfers],
    accounts: list[int], params: ReplicatedParams, seed: int,
) -> ReplicatedRound:
    """One replicated round on a fresh 3-replica ledger (module doc)."""
    return trio.run(_round, setup, batches, accounts, params, seed)


def summarize(rounds: list[ReplicatedRound], events: int, batch_size: int,
              params: ReplicatedParams) -> dict[str, Any]:
    """The replicated figures over the rounds (medians; p99 the worst round's)."""
    per_round = [events / sum(r.batch_wall) for r in rounds]
    singles = [params.single_ops / r.single_seconds for r in rounds]
    lat = [x for r in rounds for x in r.single_latencies]
    entries = sum(r.single_entries for r in rounds)
    return {
        "deployment": f"3 replicas under {params.sandbox} through a root, fsync",
        "batches": {
            "transfers_per_s": median(per_round),
            "rounds_transfers_per_s": per_round,
            "batch_ms_p50": median([x for r in rounds for x in r.batch_wall]) * 1e3,
            "batch_ms_p99": percentile([x for r in rounds for x in r.batch_wall], 99) * 1e3,
            "batch_size": batch_size,
            "entries_per_batch": (sum(r.batch_entries for r in rounds)
                                  / max(sum(len(r.batch_wall) for r in rounds), 1)),
            "replay_agrees": all(r.replay_agrees for r in rounds),
        },
        "concurrent": {
            "clients": params.clients,
            "transfers": params.single_ops,
            "transfers_per_s": median(singles),
            "rounds_transfers_per_s": singles,
            "p50_ms": median(lat) * 1e3,
            "p99_ms": percentile(lat, 99) * 1e3,
            "ok": sum(r.single_ok for r in rounds),
            "entries": entries,
            "commands_per_entry": params.single_ops * len(rounds) / max(entries, 1),
        },
    }

__all__ = ["ReplicatedParams", "ReplicatedRound", "run_replicated", "summarize"]

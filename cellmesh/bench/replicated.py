"""Replicated cell benchmark: a 3-replica bank through a real root, against raw Raft and PySyncObj.

Theory of operation
-------------------
Everything runs on this host, in one invocation:

1. **PySyncObj** (the baseline; ``pip install pysyncobj``, a bench extra):
   three processes over localhost TCP, a replicated dict, ``concurrency``
   commands in flight (its journal is never fsynced).
2. **Raw Raft** (the floor) and **the replicated cell**, both running at once
   and measured in alternating rounds (``rounds`` times: raw loaded, cell
   loaded, raw single, cell single), so the machine's drifting load hits
   both alike; ratios are the median of the per-round ratios.

   * Raw Raft: three ``cellmesh.bench._raftnode`` processes, Raft nodes over
     the membrane transport with real fsync, no root, no sandbox, no
     sessions, one entry per proposal; one synapse keeps ``concurrency``
     proposals in flight (then one, for the single-op latency).
   * The replicated cell: ``cellmesh.testing.bank.Bank`` with ``replicas =
     3`` served by a real root in this process (``sandbox`` bwrap by default,
     real fsync), clients through the group's socket exactly as cells call
     it: ``concurrency`` callers (tasks) spread over ``connections`` synapses
     (each its own client session), each sending small commands (``Deposit``
     of 1) one after the other; then one caller alone (the single write).
3. ``trials`` times: ``kill -9`` of the leader through the root (``cellmesh
   kill bank/i``) and the time until the next write is acknowledged (the
   caller just calls: its synapse reconnects and resends).

Latencies: p50 is the median of the rounds' p50s, p99 the worst round's.
Printed: ops/s, p50/p99 latency, the log entries the run used (so how many
commands shared an entry: group commit), and the ratios against PySyncObj
and raw Raft from the same run, with the targets (>= 3x PySyncObj, >= 0.5x
raw Raft, single write p50 <= 3 ms, failover median <= 500 ms).
``--json`` prints every number as one JSON document; ``--quick`` is a
short smoke run.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from ..actors.control import KillCell
from ..testing.bank import Deposit, Receipt
from ..testing.cluster import GroupAdmin, process_replica_group
from ..transport.synapse import Synapse
from . import raft as raft_bench

GROUP: Final = "bank"
REPLICAS: Final = 3
#: Targets from issue 11 (ratios are cellmesh / baseline).
TARGET_VS_PYSYNCOBJ: Final = 3.0
TARGET_VS_RAW: Final = 0.5
TARGET_P50_MS: Final = 3.0
TARGET_FAILOVER_MS: Final = 500.0
_POLL: Final = 0.01
_DNA: Final = "from cellmesh.testing.bank import Bank\n\n__all__ = ['Bank']\n"


@attrs.frozen(kw_only=True)
class Params:
    """What one run measures."""

    ops: int = 20_000
    concurrency: int = 64
    connections: int = 8
    sequential_ops: int = 500
    trials: int = 10
    rounds: int = 5
    payload: int = 16
    sandbox: str = "bwrap"

    @classmethod
    def quick(cls, sandbox: str = "bwrap") -> Params:
        """A short smoke run."""
        return cls(ops=3000, sequential_ops=150, trials=3, rounds=3, sandbox=sandbox)


@attrs.frozen(kw_only=True)
class Run:
    """One throughput or latency run of the replicated cell."""

    ops: int
    seconds: float
    p50: float
    p99: float
    entries: int

    @property
    def ops_per_second(self) -> float:
        """Acknowledged commands per second."""
        return self.ops / self.seconds

    @property
    def ops_per_entry(self) -> float:
        """Commands per Raft entry (group commit)."""
        return self.ops / max(self.entries, 1)


def _pcts(latencies: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return cuts[49], cuts[98]


# --------------------------------------------------------------------------
# Deployments: through a root (bwrap/host), or plain processes


@attrs.define(eq=False)
class Group:
    """A running 3-replica bank: where clients connect, and how to kill a replica."""

    admin: GroupAdmin
    how: str
    root: Any = None  #: the Root, when served by one
    procs: Any = None  #: the ProcessGroup, without a root

    @property
    def socket_dir(self) -> Path:
        """The directory of the group's client socket."""
        return self.admin.socket_dir

    async def kill(self, replica: int) -> None:
        """``kill -9`` replica ``replica`` (the root restarts it; without a root, we do)."""
        if self.root is not None:
            async with Synapse.grow(
                "mitosis", socket_path=self.root.paths.umbilical, client_name="bench"
            ) as ctl:
                await ctl.fire(KillCell(name=f"{GROUP}/{replica}"))
        else:
            self.procs.kill(replica)

    async def recover(self, replica: int) -> None:
        """Wait until replica ``replica`` runs again and has caught up with the leader."""
        if self.root is None:
            self.procs.start(replica)
        while True:
            leader = await self.admin.leader()
            try:
                mine = await self.admin.stats(replica)
                theirs = await self.admin.stats(leader)
            except Exception:
                await trio.sleep(_POLL)
                continue
            if mine.applied_index >= theirs.commit_index and mine.leader is not None:
                return
            await trio.sleep(_POLL)


@asynccontextmanager
async def open_root_group(
    sandbox: str, *, name: str, entry: str, dna: str, replicas: int = REPLICAS
) -> AsyncIterator[tuple[Any, GroupAdmin]]:
    """A root in this process (``sandbox`` bwrap or host) serving one replicated cell.

    ``entry`` is the cell's ``module:Class``; ``dna`` the text of its one-file
    DNA (``dna.py``). Yields the Root and a :class:`GroupAdmin` of the group,
    once it has a leader; everything is removed afterwards.
    """
    from ..testing.mesh import open_root

    home = Path(tempfile.mkdtemp(prefix="cbr-", dir="/tmp"))
    try:
        (home / "dna.py").write_text(dna)
        toml = (
            f'[cells.{name}]\ndna = "dna.py"\nentry = "{entry}"\n'
            f"replicas = {replicas}\nstandby = true\nstart_timeout = 60\n"
        )
        async with open_root(home, toml, sandbox=sandbox, stop_timeout=20) as root:
            admin = GroupAdmin(name=name, socket_dir=root.paths.socket_dir,
                               members=list(range(replicas)))
            await admin.leader()
            yield root, admin
    finally:
        shutil.rmtree(home, ignore_errors=True)


@asynccontextmanager
async def open_group(sandbox: str) -> AsyncIterator[Group]:
    """A 3-replica bank served by a root with ``sandbox`` (bwrap, host) or as ``processes``."""
    if sandbox == "processes":
        with process_replica_group("cellmesh.testing.bank:Bank", name=GROUP) as procs:
            await procs.leader()
            yield Group(admin=procs, how="3 replica processes, no root", procs=procs)
        return
    async with open_root_group(sandbox, name=GROUP, entry="dna:Bank", dna=_DNA) as (root, admin):
        yield Group(admin=admin, how=f"3 replicas under {sandbox} through a root", root=root)


# --------------------------------------------------------------------------
# Measurements


async def throughput(group: Group, *, ops: int, concurrency: int, connections: int,
                     tag: str) -> Run:
    """``concurrency`` callers over ``connections`` synapses, ``ops`` deposits in all."""
    latencies: list[float] = []
    counter = iter(range(ops))

    async def caller(syn: Synapse, who: int) -> None:
        for i in counter:
            started = time.perf_counter()
            receipt = await syn.fire(Deposit(id=f"{tag}{i}", account=f"a{who % 16}", amount=1))
            latencies.append(time.perf_counter() - started)
            assert isinstance(receipt, Receipt) and receipt.ok

    async with _synapses(group, connections) as syns:
        for syn in syns:  # open the sessions outside the measurement
            await syn.fire(Deposit(id=f"{tag}warm{id(syn)}", account="w", amount=0))
        leader = await group.admin.leader()
        before = await group.admin.stats(leader)
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for who in range(concurrency):
                nursery.start_soon(caller, syns[who % len(syns)], who)
        elapsed = time.perf_counter() - started
        after = await group.admin.stats(leader)
    p50, p99 = _pcts(latencies)
    return Run(ops=ops, seconds=elapsed, p50=p50, p99=p99,
               entries=after.last_index - before.last_index)


@asynccontextmanager
async def _synapses(group: Group, count: int) -> AsyncIterator[list[Synapse]]:
    syns: list[Synapse] = []
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            syns.append(await nursery.start(_hold, group))
        yield syns
        nursery.cancel_scope.cancel()


async def _hold(group: Group, *, task_status: trio.TaskStatus[Synapse]) -> None:
    async with Synapse.grow(GROUP, socket_dir=group.socket_dir, client_name="bench") as syn:
        task_status.started(syn)
        await trio.sleep_forever()


async def failover(group: Group, trials: int) -> list[float]:
    """Seconds from ``kill -9`` of the leader to the next acknowledged write, per trial."""
    times = []
    async with Synapse.grow(GROUP, socket_dir=group.socket_dir, client_name="bench",
                            retry_after=0.5) as syn:
        await syn.fire(Deposit(id="failover-warm", account="f", amount=0))
        for trial in range(trials):
            leader = await group.admin.leader()
            await group.kill(leader)
            started = time.perf_counter()
            await syn.fire(Deposit(id=f"failover-{trial}", account="f", amount=1))
            times.append(time.perf_counter() - started)
            await group.recover(leader)
    return times


def _pool(runs: list[Run]) -> Run:
    """Rounds pooled into one run (latency percentiles over every sample)."""
    return Run(
        ops=sum(r.ops for r in runs), seconds=sum(r.seconds for r in runs),
        p50=statistics.median(r.p50 for r in runs), p99=max(r.p99 for r in runs),
        entries=sum(r.entries for r in runs),
    )


async def _raw_round(cluster: raft_bench.RawCluster, *, ops: int, concurrency: int,
                     payload: int) -> Run:
    leader = await cluster.leader()
    async with cluster.client(leader) as syn:
        r = await raft_bench.pipelined(syn, ops, concurrency, payload)
    return Run(ops=r.ops, seconds=r.seconds, p50=r.p50, p99=r.p99, entries=r.ops)


async def measure(params: Params) -> dict[str, Any]:
    """Raw Raft and the replicated cell, both running, measured in alternating rounds.

    The machine's load drifts; alternating short rounds (raw, then
    replicated, ``rounds`` times) and taking the median of the per-round
    ratios keeps the comparison fair. Then the failover trials.
    """
    rounds = params.rounds
    per_round = max(params.ops // rounds, 1)
    single_per_round = max(params.sequential_ops // rounds, 10)
    raw_runs: list[Run] = []
    raw_single: list[Run] = []
    rep_runs: list[Run] = []
    rep_single: list[Run] = []
    with raft_bench.raw_cluster(0.02) as cluster:
        async with open_group(params.sandbox) as group:
            await _raw_round(cluster, ops=min(per_round, 1000), concurrency=params.concurrency,
                             payload=params.payload)
            await throughput(group, ops=min(per_round, 1000), concurrency=params.concurrency,
                             connections=params.connections, tag="warm")
            for n in range(rounds):
                raw_runs.append(await _raw_round(
                    cluster, ops=per_round, concurrency=params.concurrency,
                    payload=params.payload))
                rep_runs.append(await throughput(
                    group, ops=per_round, concurrency=params.concurrency,
                    connections=params.connections, tag=f"t{n}."))
                raw_single.append(await _raw_round(
                    cluster, ops=single_per_round, concurrency=1, payload=params.payload))
                rep_single.append(await throughput(
                    group, ops=single_per_round, concurrency=1, connections=1, tag=f"s{n}."))
            times = await failover(group, params.trials) if params.trials else []
            how = group.how
    return {
        "deployment": how,
        "rounds": rounds,
        "raw_raft": _run_json(_pool(raw_runs)),
        "raw_raft_single": _run_json(_pool(raw_single)),
        "throughput": _run_json(_pool(rep_runs)),
        "single": _run_json(_pool(rep_single)),
        "round_ratios_vs_raw": [
            rep.ops_per_second / raw.ops_per_second
            for rep, raw in zip(rep_runs, raw_runs, strict=True)
        ],
        "round_single_p50_ratios": [
            rep.p50 / raw.p50 for rep, raw in zip(rep_single, raw_single, strict=True)
        ],
        "failover_s": times,
    }


def _run_json(run: Run | raft_bench.Throughput | None) -> dict[str, Any] | None:
    if run is None:
        return None
    out = {"ops": run.ops, "seconds": run.seconds, "ops_per_s": run.ops_per_second,
           "p50_ms": run.p50 * 1e3, "p99_ms": run.p99 * 1e3}
    if isinstance(run, Run):
        out |= {"entries": run.entries, "ops_per_entry": run.ops_per_entry}
    return out


def run_all(params: Params) -> dict[str, Any]:
    """Every measurement of the module docstring, in order; JSON-ready."""
    base = raft_bench.pysyncobj_throughput(
        ops=params.ops, concurrency=params.concurrency, payload=params.payload
    )
    measured = trio.run(measure, params)
    result: dict[str, Any] = {
        "params": attrs.asdict(params),
        "pysyncobj": _run_json(base),
        "raw_raft": measured.pop("raw_raft"),
        "raw_raft_single": measured.pop("raw_raft_single"),
        "replicated": measured,
    }
    ops = measured["throughput"]["ops_per_s"]
    times = measured["failover_s"]
    result["ratios"] = {
        "vs_pysyncobj": ops / base.ops_per_second if base is not None else None,
        "vs_raw_raft": statistics.median(measured["round_ratios_vs_raw"]),
        "single_p50_ms": measured["single"]["p50_ms"],
        "single_p50_vs_raw_raft": statistics.median(measured["round_single_p50_ratios"]),
        "failover_median_ms": statistics.median(times) * 1e3 if times else None,
    }
    result["targets"] = {
        "vs_pysyncobj": TARGET_VS_PYSYNCOBJ, "vs_raw_raft": TARGET_VS_RAW,
        "single_p50_ms": TARGET_P50_MS, "failover_median_ms": TARGET_FAILOVER_MS,
    }
    return result


# --------------------------------------------------------------------------
# Report


def _met(value: float | None, target: float, higher: bool) -> str:
    if value is None:
        return "n/a"
    ok = value >= target if higher else value <= target
    return "met" if ok else "MISSED"


def format_report(result: dict[str, Any]) -> str:
    """The human-readable table of :func:`run_all`'s result."""
    p = result["params"]
    rep = result["replicated"]
    lines = [
        f"Replicated cell bench: {rep['deployment']}, real fsync; "
        f"{p['ops']:,} small commands from {p['concurrency']} concurrent callers "
        f"over {p['connections']} connections",
    ]

    def row(name: str, run: dict[str, Any] | None, extra: str = "") -> None:
        if run is None:
            lines.append(f"  {name:<44} not measured (pip install pysyncobj)")
            return
        lines.append(
            f"  {name:<44} {run['ops_per_s']:>9,.0f} ops/s   p50 {run['p50_ms']:7.2f} ms"
            f"   p99 {run['p99_ms']:8.2f} ms{extra}"
        )

    row("PySyncObj, 3 nodes (journal never fsynced)", result["pysyncobj"])
    raw = result["raw_raft"]
    row("raw Raft, 3 nodes over membranes (fsync)", raw,
        f"   {raw['ops_per_entry']:.1f} ops/entry" if "ops_per_entry" in raw else "")
    thr = rep["throughput"]
    row("replicated cell (sessions, fsync)", thr,
        f"   {thr['entries']:,} entries, {thr['ops_per_entry']:.1f} ops/entry")
    row("raw Raft, 1 in flight (single write)", result.get("raw_raft_single"))
    single = rep["single"]
    row("replicated cell, 1 caller (single write)", single)
    r = result["ratios"]
    t = result["targets"]
    vs_base = r["vs_pysyncobj"]
    lines.append(
        "  ratios: vs PySyncObj "
        + (f"{vs_base:.2f}x" if vs_base is not None else "n/a")
        + f" (target >= {t['vs_pysyncobj']:g}x: {_met(vs_base, t['vs_pysyncobj'], True)});"
        f" vs raw Raft {r['vs_raw_raft']:.2f}x (target >= {t['vs_raw_raft']:g}x: "
        f"{_met(r['vs_raw_raft'], t['vs_raw_raft'], True)})"
    )
    vs_raw = r.get("single_p50_vs_raw_raft")
    lines.append(
        f"  single write p50 {r['single_p50_ms']:.2f} ms (target <= {t['single_p50_ms']:g} ms:"
        f" {_met(r['single_p50_ms'], t['single_p50_ms'], False)})"
        + (f"; {vs_raw:.2f}x raw Raft's single-op p50" if vs_raw is not None else "")
    )
    times = rep["failover_s"]
    if times:
        lines.append(
            f"  failover (kill -9 leader -> next acknowledged write), {len(times)} trials: "
            f"median {r['failover_median_ms']:.0f} ms, min {min(times) * 1e3:.0f} ms, "
            f"max {max(times) * 1e3:.0f} ms (target median <= {t['failover_median_ms']:g} ms:"
            f" {_met(r['failover_median_ms'], t['failover_median_ms'], False)})"
        )
    return "\n".join(lines)


def main(
    *, json_output: bool = False, quick: bool = False, sandbox: str = "bwrap",
    overrides: Mapping[str, int] | None = None,
) -> int:
    """Run :func:`run_all` and print the table (or JSON). Returns the exit code.

    ``overrides`` replaces counts of :class:`Params` (``ops``, ``trials``, ...).
    """
    if sandbox == "bwrap":
        from ..sandbox._bwrap import find_bwrap, probe_bwrap

        problem = probe_bwrap(find_bwrap())
        if problem is not None:
            print(f"bwrap cannot run here ({problem}): measuring under the host sandbox",
                  file=sys.stderr, flush=True)
            sandbox = "host"
    params = Params.quick(sandbox) if quick else Params(sandbox=sandbox)
    if overrides:
        fields = attrs.asdict(params) | dict(overrides)
        params = Params(**fields)
    result = run_all(params)
    print(json.dumps(result, indent=2) if json_output else format_report(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(json_output="--json" in sys.argv, quick="--quick" in sys.argv))


__all__ = [
    "Group",
    "Params",
    "Run",
    "failover",
    "format_report",
    "main",
    "measure",
    "open_group",
    "open_root_group",
    "run_all",
    "throughput",
]

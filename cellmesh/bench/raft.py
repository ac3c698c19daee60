"""Raft benchmark: a raw 3-process cellmesh Raft cluster against PySyncObj, in one run.

Theory of operation
-------------------
Everything runs on this host. The cellmesh cluster is *raw Raft*: three
``python -m cellmesh.bench._raftnode`` processes, each a
:class:`~cellmesh.consensus.RaftNode` over the membrane transport (the one
transport Raft runs on) with a real write-ahead log and a key-value state
machine -- no root, no sandbox, no client sessions, one entry per proposal.
One synapse to the leader keeps ``concurrency`` proposals in flight.
Measured:

* committed ops/s and commit latency p50/p99 (propose sent -> result back,
  i.e. committed by a quorum, applied on the leader, answered), pipelined
  (``concurrency`` in flight) and sequential (one in flight: the unloaded
  commit latency);
* the same with the WAL's fsyncs disabled (``--unsafe-no-fsync``), to
  compare like with like: PySyncObj never fsyncs its journal;
* failover time over ``trials`` runs: ``kill -9`` of the leader until a new
  leader has committed a proposal (the killed node is restarted between
  trials);
* WAL recovery time of a log of ``wal_entries`` entries.

The baseline is PySyncObj (``pip install pysyncobj``, an optional bench
dependency): three processes over localhost TCP, a replicated dict, the same
number of commands kept in flight through the library's callback API, the
same payloads. Ratios are cellmesh / PySyncObj. ``cellmesh bench
replicated`` reuses :func:`cellmesh_throughput` as its "raw Raft" floor.

:func:`run_raft_bench` returns every number as a JSON-ready dict
(``cellmesh bench raft --json`` prints it); :func:`format_raft_report` turns
it into the table. ``--quick`` (:data:`QUICK`) is a short run for a smoke
check: fewer operations, three failover trials, a smaller WAL.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Final

import attrs
import trio

from cellmesh.bench._raftnode import (
    NoSync,
    RawInfo,
    RawPropose,
    RawRedirect,
    RawResult,
    RawStatus,
    socket_path,
)
from cellmesh.consensus.types import Entry, HardState
from cellmesh.consensus.wal import WalBatch, WriteAheadLog
from cellmesh.errors import CellmeshError
from cellmesh.transport.synapse import Synapse

VOTERS: Final = (1, 2, 3)
_POLL: Final = 0.01


@attrs.frozen(kw_only=True)
class RaftBenchParams:
    """What one ``cellmesh bench raft`` run measures (see the module docstring).

    ``ops``/``concurrency``: the pipelined run; ``sequential_ops``: the
    one-in-flight latency run (0 skips it); ``payload``: value bytes;
    ``tick``: Raft tick in seconds (elections after 10-20 ticks);
    ``trials``: failover trials (0 skips them); ``wal_entries``: entries
    in the WAL recovery measurement (0 skips it).
    """

    ops: int = 20_000
    concurrency: int = 256
    sequential_ops: int = 500
    payload: int = 64
    tick: float = 0.015
    trials: int = 20
    wal_entries: int = 1_000_000


#: The full run (a few minutes on a 2-core machine).
FULL: Final = RaftBenchParams()
#: ``--quick``: a short run (well under a minute) for a smoke check.
QUICK: Final = RaftBenchParams(ops=2_000, sequential_ops=100, trials=3, wal_entries=100_000)


@attrs.frozen(kw_only=True)
class Throughput:
    """One pipelined run: ops/s and commit latency percentiles (seconds)."""

    ops: int
    seconds: float
    p50: float
    p99: float
    leader_saves: int | None = None  #: WAL batches (fsyncs) the leader made during the run
    entries: int | None = None  #: log entries the run appended (group commit: ops / entries)

    @property
    def ops_per_second(self) -> float:
        """Committed operations per second."""
        return self.ops / self.seconds

    def to_json(self) -> dict[str, Any]:
        """The numbers of this run, in milliseconds, for the ``--json`` report."""
        doc: dict[str, Any] = {
            "ops": self.ops,
            "seconds": self.seconds,
            "ops_per_s": self.ops_per_second,
            "p50_ms": self.p50 * 1e3,
            "p99_ms": self.p99 * 1e3,
        }
        if self.leader_saves is not None:
            doc["leader_wal_batches"] = self.leader_saves
            doc["ops_per_batch"] = self.ops / max(self.leader_saves, 1)
        return doc


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return cuts[49], cuts[98]


# --------------------------------------------------------------------------
# raw cellmesh cluster (nodes over the membrane transport)


@attrs.define(eq=False)
class RawCluster:
    """Raw Raft node processes (``cellmesh.bench._raftnode``); start/kill them by id."""

    root: Path
    tick: float
    no_fsync: bool
    procs: dict[int, subprocess.Popen[bytes]] = attrs.Factory(dict)

    @property
    def socket_dir(self) -> Path:
        """Where the nodes' sockets are."""
        return self.root / "run"

    def start(self, node: int) -> None:
        """Start (or restart, from its WAL) node ``node``."""
        self.procs[node] = subprocess.Popen([
            sys.executable, "-m", "cellmesh.bench._raftnode",
            "--id", str(node), "--voters", ",".join(map(str, VOTERS)),
            "--data-dir", str(self.root / f"data-{node}"),
            "--socket-dir", str(self.socket_dir), "--tick", str(self.tick),
            *(["--unsafe-no-fsync"] if self.no_fsync else []),
        ])

    def kill(self, node: int) -> None:
        """SIGKILL node ``node`` and reap it."""
        proc = self.procs.pop(node)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    @contextlib.asynccontextmanager
    async def client(self, node: int) -> AsyncIterator[Synapse]:
        """A synapse to node ``node``."""
        async with Synapse.grow(
            "raft", socket_path=socket_path(self.socket_dir, node), client_name="bench"
        ) as syn:
            yield syn

    async def status(self, node: int) -> RawInfo | None:
        """Node ``node``'s status, or None if it does not answer."""
        try:
            async with self.client(node) as syn:
                info = await syn.fire(RawStatus())
        except CellmeshError:
            return None
        assert isinstance(info, RawInfo)
        return info

    async def leader(self, nodes: tuple[int, ...] = VOTERS) -> int:
        """Poll the nodes' status until one is leader; return its id (CellmeshError after
        :data:`WAIT_LIMIT` seconds without one: the nodes died, or cannot elect)."""
        with _bounded("a leader among nodes " + ", ".join(map(str, nodes))):
            while True:
                for node in nodes:
                    info = await self.status(node)
                    if info is not None and info.role == "LEADER":
                        return node
                await trio.sleep(_POLL)


@contextmanager
def raw_cluster(tick: float, *, no_fsync: bool = False) -> Iterator[RawCluster]:
    """Start one raw node process per voter; kill them all on exit."""
    with tempfile.TemporaryDirectory(prefix="cmb-", dir="/tmp") as name:
        cluster = RawCluster(Path(name), tick, no_fsync)
        cluster.socket_dir.mkdir(mode=0o700)
        try:
            for node in VOTERS:
                cluster.start(node)
            yield cluster
        finally:
            for node in list(cluster.procs):
                cluster.kill(node)


#: The longest the bench waits for a cluster to do what it always does in well under a
#: second (elect, commit, catch up): past it, the nodes died or are stuck.
WAIT_LIMIT: Final = 60.0


@contextmanager
def _bounded(what: str) -> Iterator[None]:
    """Raise CellmeshError naming ``what`` if the block takes over :data:`WAIT_LIMIT`."""
    try:
        with trio.fail_after(WAIT_LIMIT):
            yield
    except trio.TooSlowError:
        raise CellmeshError(f"no {what} after {WAIT_LIMIT:.0f} s: the raw nodes died or "
                            "are stuck (their output is above)") from None


async def _propose(syn: Synapse, command: bytes) -> bytes:
    reply = await syn.fire(RawPropose(command=command))
    if isinstance(reply, RawRedirect):
        raise CellmeshError(f"not the leader (hint {reply.leader})")
    assert isinstance(reply, RawResult)
    return bytes(reply.value)


async def pipelined(syn: Synapse, ops: int, concurrency: int, payload: int) -> Throughput:
    """``ops`` proposals through ``syn`` (a raw node), ``concurrency`` in flight."""
    latencies: list[float] = []
    value = b"v" * payload
    counter = iter(range(ops))

    async def worker() -> None:
        for i in counter:
            started = time.perf_counter()
            await _propose(syn, b"k%d=" % (i % 1000) + value)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    elapsed = time.perf_counter() - started
    p50, p99 = _percentiles(latencies)
    return Throughput(ops=ops, seconds=elapsed, p50=p50, p99=p99)


async def cellmesh_throughput(
    *, ops: int, concurrency: int, payload: int, tick: float, no_fsync: bool
) -> Throughput:
    """Pipelined proposals against a fresh raw 3-process cellmesh cluster."""
    with raw_cluster(tick, no_fsync=no_fsync) as cluster:
        leader = await cluster.leader()
        async with cluster.client(leader) as syn:
            await pipelined(syn, min(ops // 10, 2000), concurrency, payload)  # warm up
            before = await syn.fire(RawStatus())
            result = await pipelined(syn, ops, concurrency, payload)
            after = await syn.fire(RawStatus())
            assert isinstance(before, RawInfo) and isinstance(after, RawInfo)
            return attrs.evolve(
                result, leader_saves=after.saves - before.saves,
                entries=after.commit - before.commit,
            )


async def _commit_somewhere(cluster: RawCluster, nodes: tuple[int, ...], command: bytes) -> int:
    """Propose ``command`` on whichever node accepts it; return that node."""
    with _bounded(f"a commit of {command!r}"):
        while True:
            for node in nodes:
                try:
                    async with cluster.client(node) as syn:
                        await _propose(syn, command)
                        return node
                except CellmeshError:
                    pass
            await trio.sleep(_POLL)


async def cellmesh_failover(*, trials: int, tick: float) -> list[float]:
    """Seconds from ``kill -9`` of the leader to the next committed proposal, per trial."""
    times = []
    with raw_cluster(tick) as cluster:
        leader = await _commit_somewhere(cluster, VOTERS, b"warm=up")
        for trial in range(trials):
            cluster.kill(leader)
            started = time.perf_counter()
            survivors = tuple(n for n in VOTERS if n != leader)
            new_leader = await _commit_somewhere(cluster, survivors, b"trial=%d" % trial)
            times.append(time.perf_counter() - started)
            cluster.start(leader)
            with _bounded(f"node {leader} to catch up after its restart"):
                while True:  # the restarted node caught up: it applied the trial's write
                    info = await cluster.status(leader)
                    leading = await cluster.status(new_leader)
                    if (info is not None and leading is not None
                            and info.applied >= leading.commit):
                        break
                    await trio.sleep(_POLL)
            leader = new_leader
    return times


# --------------------------------------------------------------------------
# PySyncObj baseline


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


#: PySyncObj's strongest setting for this workload: ``appendEntriesUseBatch=False``
#: sends each entry at once; its default batches appends per 100 ms period, which
#: made one call in flight take ~205 ms (a strawman: 1.7 ms without it).
_PYSYNCOBJ_NODE: Final = """
import sys, time
from pysyncobj import SyncObj, SyncObjConf, replicated
class KV(SyncObj):
    def __init__(self, me, others):
        conf = SyncObjConf(dynamicMembershipChange=False, appendEntriesUseBatch=False)
        super().__init__(me, others, conf)
        self._data = {}
    @replicated
    def set(self, key, value):
        old = self._data.get(key, b"")
        self._data[key] = value
        return old
node = KV(sys.argv[1], sys.argv[2:])
while True:
    time.sleep(1)
"""


def pysyncobj_throughput(*, ops: int, concurrency: int, payload: int) -> Throughput | None:
    """The same pipelined workload on a 3-process PySyncObj cluster; ``None`` if missing."""
    try:
        from pysyncobj import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
            SyncObj,
            SyncObjConf,
            replicated,
        )
    except ImportError:
        return None

    class KV(SyncObj):  # type: ignore[misc,unused-ignore]
        def __init__(self, me: str, others: list[str]) -> None:
            conf = SyncObjConf(dynamicMembershipChange=False, appendEntriesUseBatch=False)
            super().__init__(me, others, conf)
            self._data: dict[bytes, bytes] = {}

        @replicated  # type: ignore[untyped-decorator,misc,unused-ignore]
        def set(self, key: bytes, value: bytes) -> bytes:
            old = self._data.get(key, b"")
            self._data[key] = value
            return old

    addrs = [f"127.0.0.1:{_free_port()}" for _ in VOTERS]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PYSYNCOBJ_NODE, addrs[i], *(a for a in addrs if a != addrs[i])]
        )
        for i in (1, 2)
    ]
    node = KV(addrs[0], addrs[1:])
    try:
        while node._getLeader() is None:
            time.sleep(_POLL)

        def run(count: int) -> Throughput:
            slots = threading.Semaphore(concurrency)
            done = threading.Event()
            latencies: list[float] = []
            remaining = [count]
            lock = threading.Lock()
            value = b"v" * payload

            def callback_for(started: float) -> object:
                def callback(result: object, error: object) -> None:
                    with lock:
                        latencies.append(time.perf_counter() - started)
                        remaining[0] -= 1
                        if remaining[0] == 0:
                            done.set()
                    slots.release()

                return callback

            began = time.perf_counter()
            for i in range(count):
                slots.acquire()
                node.set(b"k%d" % (i % 1000), value, callback=callback_for(time.perf_counter()))
            done.wait()
            elapsed = time.perf_counter() - began
            p50, p99 = _percentiles(latencies)
            return Throughput(ops=count, seconds=elapsed, p50=p50, p99=p99)

        run(max(1, min(ops // 10, 2000)))  # warm-up (at least one op: zero never ends)
        return run(ops)
    finally:
        node.destroy()
        for proc in procs:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------
# WAL recovery


def wal_recovery_seconds(entries: int, payload: int) -> float:
    """Fill a WAL with ``entries`` entries (unsynced, batches of 1000); time its recovery."""
    root = Path(tempfile.mkdtemp(prefix="cmw-"))
    try:
        data = b"x" * payload
        with WriteAheadLog.open(root, syncer=NoSync())[0] as wal:
            for first in range(1, entries + 1, 1000):
                last = min(first + 999, entries)
                wal.save(
                    WalBatch(
                        hard_state=HardState(term=1, vote=1, commit=first - 1),
                        entries=tuple(
                            Entry(index=i, term=1, data=data) for i in range(first, last + 1)
                        ),
                    )
                )
        started = time.perf_counter()
        wal, recovered = WriteAheadLog.open(root)
        elapsed = time.perf_counter() - started
        wal.close()
        assert len(recovered.entries) == entries
        return elapsed
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------
# Report


Progress = Callable[[str], None]


def _ratio(result: Throughput, base: Throughput | None) -> float | None:
    return result.ops_per_second / base.ops_per_second if base is not None else None


def run_raft_bench(params: RaftBenchParams, *, progress: Progress | None = None) -> dict[str, Any]:
    """Run every measurement of ``params``; return a JSON-ready report."""
    say = progress if progress is not None else (lambda _msg: None)
    report: dict[str, Any] = {
        "bench": "raft",
        "params": attrs.asdict(params),
        "pysyncobj_installed": True,
        "runs": [],
        "failover": None,
        "wal_recovery": None,
    }
    for concurrency, ops in ((params.concurrency, params.ops), (1, params.sequential_ops)):
        if ops <= 0:
            continue
        say(f"{ops} ops, {concurrency} in flight: PySyncObj")
        base = pysyncobj_throughput(ops=ops, concurrency=concurrency, payload=params.payload)
        report["pysyncobj_installed"] = report["pysyncobj_installed"] and base is not None
        run: dict[str, Any] = {
            "concurrency": concurrency,
            "ops": ops,
            "pysyncobj": base.to_json() if base is not None else None,
        }
        for no_fsync, key in ((False, "cellmesh_fsync"), (True, "cellmesh_no_fsync")):
            say(f"{ops} ops, {concurrency} in flight: {key}")
            result = trio.run(
                functools.partial(
                    cellmesh_throughput,
                    ops=ops,
                    concurrency=concurrency,
                    payload=params.payload,
                    tick=params.tick,
                    no_fsync=no_fsync,
                )
            )
            run[key] = result.to_json()
            run[f"{key}_vs_pysyncobj"] = _ratio(result, base)
        report["runs"].append(run)
    if params.trials:
        say(f"failover: {params.trials} trials")
        failover = functools.partial(cellmesh_failover, trials=params.trials, tick=params.tick)
        times = trio.run(failover)
        report["failover"] = {
            "trials": len(times),
            "samples_ms": [t * 1e3 for t in times],
            "median_ms": statistics.median(times) * 1e3,
            "min_ms": min(times) * 1e3,
            "max_ms": max(times) * 1e3,
            "election_timeout_ms": [10 * params.tick * 1e3, 20 * params.tick * 1e3],
        }
    if params.wal_entries:
        say(f"WAL recovery: {params.wal_entries} entries")
        seconds = wal_recovery_seconds(params.wal_entries, params.payload)
        report["wal_recovery"] = {
            "entries": params.wal_entries,
            "seconds": seconds,
            "entries_per_s": params.wal_entries / seconds,
        }
    return report


def _row(name: str, result: dict[str, Any], ratio: float | None) -> str:
    shown = f"{ratio:5.2f}x" if ratio is not None else "  n/a"
    saves = ""
    if "leader_wal_batches" in result:
        saves = (
            f"   leader WAL batches {result['leader_wal_batches']:,} "
            f"({result['ops_per_batch']:.0f} ops/batch)"
        )
    return (
        f"  {name:<34} {result['ops_per_s']:>9,.0f} ops/s   p50 {result['p50_ms']:7.2f} ms"
        f"   p99 {result['p99_ms']:7.2f} ms   vs PySyncObj {shown}{saves}"
    )


def format_raft_report(report: dict[str, Any]) -> str:
    """The human-readable table of a :func:`run_raft_bench` report."""
    params = report["params"]
    lines = []
    for run in report["runs"]:
        lines.append(
            f"Raft bench: 3 processes on this host, {run['ops']:,} ops, {run['concurrency']} in "
            f"flight, {params['payload']}-byte values, tick {params['tick'] * 1e3:.0f} ms"
        )
        if run["pysyncobj"] is None:
            lines.append("  PySyncObj not installed (pip install pysyncobj): no baseline")
        else:
            lines.append(_row("PySyncObj (journal never fsynced)", run["pysyncobj"], 1.0))
        lines.append(
            _row("raw Raft (fdatasync per batch)", run["cellmesh_fsync"],
                 run["cellmesh_fsync_vs_pysyncobj"])
        )
        lines.append(
            _row("raw Raft (WAL fsync disabled)", run["cellmesh_no_fsync"],
                 run["cellmesh_no_fsync_vs_pysyncobj"])
        )
    failover = report["failover"]
    if failover is not None:
        low, high = failover["election_timeout_ms"]
        lines.append(
            f"  failover (kill -9 leader -> next commit), {failover['trials']} trials: "
            f"median {failover['median_ms']:.0f} ms, min {failover['min_ms']:.0f} ms, "
            f"max {failover['max_ms']:.0f} ms  (election timeout {low:.0f}-{high:.0f} ms)"
        )
    recovery = report["wal_recovery"]
    if recovery is not None:
        lines.append(
            f"  WAL recovery: {recovery['entries']:,} entries in {recovery['seconds']:.2f} s "
            f"({recovery['entries_per_s']:,.0f} entries/s)"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, *, out: IO[str] | None = None) -> int:
    """Parse arguments, run the measurements, print the table or (``--json``) the report."""
    parser = argparse.ArgumentParser(description="cellmesh Raft benchmark vs PySyncObj")
    parser.add_argument("--ops", type=int)
    parser.add_argument("--concurrency", type=int)
    parser.add_argument(
        "--sequential-ops", type=int, help="ops for the 1-in-flight latency run"
    )
    parser.add_argument("--payload", type=int)
    parser.add_argument("--tick", type=float)
    parser.add_argument("--trials", type=int)
    parser.add_argument("--wal-entries", type=int)
    parser.add_argument("--quick", action="store_true", help="a short run (smoke check)")
    parser.add_argument("--json", action="store_true", help="print the JSON report")
    args = parser.parse_args(argv)
    params = QUICK if args.quick else FULL
    chosen = {
        name: value
        for name, value in (
            ("ops", args.ops),
            ("concurrency", args.concurrency),
            ("sequential_ops", args.sequential_ops),
            ("payload", args.payload),
            ("tick", args.tick),
            ("trials", args.trials),
            ("wal_entries", args.wal_entries),
        )
        if value is not None
    }
    params = attrs.evolve(params, **chosen)
    stream = out if out is not None else sys.stdout

    def progress(msg: str) -> None:
        sys.stderr.write(f"[bench raft] {msg}\n")
        sys.stderr.flush()

    report = run_raft_bench(params, progress=progress)
    if args.json:
        stream.write(json.dumps(report, indent=2) + "\n")
    else:
        stream.write(format_raft_report(report))
    return 0


__all__ = [
    "FULL",
    "QUICK",
    "RaftBenchParams",
    "RawCluster",
    "Throughput",
    "cellmesh_failover",
    "cellmesh_throughput",
    "format_raft_report",
    "main",
    "pipelined",
    "pysyncobj_throughput",
    "raw_cluster",
    "run_raft_bench",
    "wal_recovery_seconds",
]

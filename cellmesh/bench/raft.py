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
"""

from __future__ import annotations

import argparse
import contextlib
import functools
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
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

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
        """Poll the nodes' status until one is leader; return its id."""
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
            while True:  # the restarted node caught up: it applied the trial's write
                info = await cluster.status(leader)
                leading = await cluster.status(new_leader)
                if info is not None and leading is not None and info.applied >= leading.commit:
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


_PYSYNCOBJ_NODE: Final = """
import sys, time
from pysyncobj import SyncObj, SyncObjConf, replicated
class KV(SyncObj):
    def __init__(self, me, others):
        super().__init__(me, others, SyncObjConf(dynamicMembershipChange=False))
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
            super().__init__(me, others, SyncObjConf(dynamicMembershipChange=False))
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

        run(min(ops // 10, 2000))
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


def _row(name: str, result: Throughput, base: Throughput | None) -> str:
    ratio = f"{result.ops_per_second / base.ops_per_second:5.2f}x" if base else "  n/a"
    saves = ""
    if result.leader_saves is not None:
        per_batch = result.ops / max(result.leader_saves, 1)
        saves = f"   leader WAL batches {result.leader_saves:,} ({per_batch:.0f} ops/batch)"
    return (
        f"  {name:<34} {result.ops_per_second:>9,.0f} ops/s   p50 {result.p50 * 1e3:7.2f} ms"
        f"   p99 {result.p99 * 1e3:7.2f} ms   vs PySyncObj {ratio}{saves}"
    )


def main(argv: list[str] | None = None) -> None:
    """Run every measurement and print the report (see the module docstring)."""
    parser = argparse.ArgumentParser(description="cellmesh Raft benchmark vs PySyncObj")
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument(
        "--sequential-ops", type=int, default=500, help="ops for the 1-in-flight latency run"
    )
    parser.add_argument("--payload", type=int, default=64)
    parser.add_argument("--tick", type=float, default=0.05)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--wal-entries", type=int, default=1_000_000)
    args = parser.parse_args(argv)

    for concurrency, ops in ((args.concurrency, args.ops), (1, args.sequential_ops)):
        if ops <= 0:
            continue
        print(
            f"Raft bench: 3 processes on this host, {ops:,} ops, {concurrency} in flight, "
            f"{args.payload}-byte values, tick {args.tick * 1e3:.0f} ms"
        )
        base = pysyncobj_throughput(ops=ops, concurrency=concurrency, payload=args.payload)
        if base is None:
            print("  PySyncObj not installed (pip install pysyncobj): no baseline")
        else:
            print(_row("PySyncObj (journal never fsynced)", base, base))
        for no_fsync in (False, True):
            result = trio.run(
                functools.partial(
                    cellmesh_throughput,
                    ops=ops,
                    concurrency=concurrency,
                    payload=args.payload,
                    tick=args.tick,
                    no_fsync=no_fsync,
                )
            )
            name = (
                "raw Raft (WAL fsync disabled)" if no_fsync else "raw Raft (fdatasync per batch)"
            )
            print(_row(name, result, base))
    if args.trials:
        times = trio.run(functools.partial(cellmesh_failover, trials=args.trials, tick=args.tick))
        print(
            f"  failover (kill -9 leader -> next commit), {len(times)} trials: "
            f"median {statistics.median(times) * 1e3:.0f} ms, min {min(times) * 1e3:.0f} ms, "
            f"max {max(times) * 1e3:.0f} ms  (election timeout {10 * args.tick * 1e3:.0f}-"
            f"{20 * args.tick * 1e3:.0f} ms)"
        )
    if args.wal_entries:
        seconds = wal_recovery_seconds(args.wal_entries, args.payload)
        print(
            f"  WAL recovery: {args.wal_entries:,} entries in {seconds:.2f} s "
            f"({args.wal_entries / seconds:,.0f} entries/s)"
        )


__all__ = [
    "RawCluster",
    "Throughput",
    "cellmesh_failover",
    "cellmesh_throughput",
    "main",
    "pipelined",
    "pysyncobj_throughput",
    "raw_cluster",
    "wal_recovery_seconds",
]

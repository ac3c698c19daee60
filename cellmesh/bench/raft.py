"""Raft benchmark: a real 3-process cellmesh cluster against PySyncObj, in one run.

Theory of operation
-------------------
Everything runs on this host. The cellmesh cluster is three
``python -m cellmesh.consensus.serve`` processes (Unix sockets, real
write-ahead logs); one pipelining client connection to the leader keeps
``concurrency`` proposals in flight. Measured:

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
same payloads. Ratios are cellmesh / PySyncObj.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Final

import attrs
import trio

from cellmesh.consensus.errors import NotLeader
from cellmesh.consensus.serve import RaftClient, ServerError, open_raft_client
from cellmesh.consensus.types import Entry, HardState
from cellmesh.consensus.wal import WalBatch, WriteAheadLog
from cellmesh.testing.cluster import ProcessCluster, process_cluster

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

    @property
    def ops_per_second(self) -> float:
        """Committed operations per second."""
        return self.ops / self.seconds


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return cuts[49], cuts[98]


# --------------------------------------------------------------------------
# cellmesh cluster


def _cluster(tick: float, *, no_fsync: bool) -> AbstractContextManager[ProcessCluster]:
    extra = ["--max-pending", "4096"] + (["--unsafe-no-fsync"] if no_fsync else [])
    return process_cluster(VOTERS, tick, extra)


async def _leader(cluster: ProcessCluster, nodes: tuple[int, ...] = VOTERS) -> int:
    """Poll the nodes' status until one is leader; return its id."""
    while True:
        for node in nodes:
            try:
                async with open_raft_client(cluster.client_path(node)) as client:
                    if (await client.status())[0] == "LEADER":
                        return node
            except (OSError, trio.BrokenResourceError):
                pass
        await trio.sleep(_POLL)


async def _pipelined(client: RaftClient, ops: int, concurrency: int, payload: int) -> Throughput:
    latencies: list[float] = []
    value = b"v" * payload
    counter = iter(range(ops))

    async def worker() -> None:
        for i in counter:
            started = time.perf_counter()
            await client.propose(b"k%d=" % (i % 1000) + value)
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
    """Pipelined proposals against a fresh 3-process cellmesh cluster."""
    with _cluster(tick, no_fsync=no_fsync) as cluster:
        for node in VOTERS:
            await cluster.wait_serving(node)
        leader = await _leader(cluster)
        async with open_raft_client(cluster.client_path(leader)) as client:
            await _pipelined(client, min(ops // 10, 2000), concurrency, payload)  # warm up
            before = (await client.status())[5]
            result = await _pipelined(client, ops, concurrency, payload)
            after = (await client.status())[5]
            assert isinstance(before, int)
            assert isinstance(after, int)
            return attrs.evolve(result, leader_saves=after - before)


async def _commit_somewhere(cluster: ProcessCluster, nodes: tuple[int, ...], command: bytes) -> int:
    """Propose ``command`` on whichever node accepts it; return that node."""
    while True:
        for node in nodes:
            try:
                async with open_raft_client(cluster.client_path(node)) as client:
                    await client.propose(command)
                    return node
            except (NotLeader, ServerError, OSError, trio.BrokenResourceError):
                pass
        await trio.sleep(_POLL)


async def cellmesh_failover(*, trials: int, tick: float) -> list[float]:
    """Seconds from ``kill -9`` of the leader to the next committed proposal, per trial."""
    times = []
    with _cluster(tick, no_fsync=False) as cluster:
        for node in VOTERS:
            await cluster.wait_serving(node)
        leader = await _commit_somewhere(cluster, VOTERS, b"warm=up")
        for trial in range(trials):
            cluster.kill(leader)
            started = time.perf_counter()
            survivors = tuple(n for n in VOTERS if n != leader)
            new_leader = await _commit_somewhere(cluster, survivors, b"trial=%d" % trial)
            times.append(time.perf_counter() - started)
            cluster.start(leader)
            await cluster.wait_serving(leader)
            async with open_raft_client(cluster.client_path(leader)) as client:
                while True:
                    try:
                        if await client.read(b"trial") == b"%d" % trial:
                            break
                    except NotLeader:
                        pass
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


class _NoSync:
    def sync_data(self, fd: int) -> None:
        pass

    def sync_file(self, fd: int) -> None:
        pass

    def sync_dir(self, fd: int) -> None:
        pass


def wal_recovery_seconds(entries: int, payload: int) -> float:
    """Fill a WAL with ``entries`` entries (unsynced, batches of 1000); time its recovery."""
    root = Path(tempfile.mkdtemp(prefix="cmw-"))
    try:
        data = b"x" * payload
        with WriteAheadLog.open(root, syncer=_NoSync())[0] as wal:
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
            name = "cellmesh (WAL fsync disabled)" if no_fsync else "cellmesh (fdatasync per batch)"
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
    "Throughput",
    "cellmesh_failover",
    "cellmesh_throughput",
    "main",
    "pysyncobj_throughput",
    "wal_recovery_seconds",
]

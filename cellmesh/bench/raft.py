"""Raft benchmark: a raw 3-process cellmesh Raft cluster against PySyncObj, in one run.

Theory of operation
-------------------
Everything runs on this host. The cellmesh cluster is *raw Raft*: three
``python -m cellmesh.bench._raftnode`` processes, each a
:class:`~cellmesh.consensus.RaftNode` over the membrane transport (the one
transport Raft runs on) with a real write-ahead log and a key-value state
machine -- no root, no sandbox, no client sessions, one entry per proposal.
One synapse to the leader keeps ``concurrency`` proposals in flight.
Measured, each next to its baseline from the same run:

* committed ops/s and commit latency p50/p99 (propose sent -> result back,
  i.e. committed by a quorum, applied on the leader, answered), pipelined
  (``concurrency`` in flight) and sequential (one in flight: the unloaded
  commit latency); the same with the WAL's fsyncs disabled
  (``--unsafe-no-fsync``), to compare like with like: PySyncObj never
  fsyncs its journal. Baseline: PySyncObj, the same number of commands kept
  in flight through the library's callback API, the same payloads; ratios
  are cellmesh / PySyncObj ops/s (higher is better);
* failover time over ``trials`` runs: ``kill -9`` of the leader until a
  surviving node has committed a proposal (proposals go to each survivor in
  turn every 10 ms; a node that does not lead answers at once), the killed
  node restarted between trials. Baseline: the same trials on a PySyncObj
  cluster whose timing is set to the raw nodes' -- election timeout
  ``raftMinTimeout``-``raftMaxTimeout`` = 10-20 ticks, heartbeat
  ``appendEntriesPeriod`` = 1 tick, loop period ``autoTickPeriod`` = 1 tick
  (:func:`pysyncobj_failover_conf`); both sides' ranges are printed. Median,
  min and max per side; the ratio is cellmesh / PySyncObj medians (lower is
  better);
* WAL recovery of a log of ``wal_entries`` entries (filled unsynced, in
  batches of 1000): the time of :meth:`WriteAheadLog.open`. Baselines: the
  same entries in SQLite (stdlib ``sqlite3``, WAL mode, one table ``(idx
  INTEGER PRIMARY KEY, term INTEGER, data BLOB)``, transactions of 1000 rows)
  timed from ``connect`` until every row is in a Python list of ``(idx,
  term, bytes)``; and the raw floor, opening and reading every file of the
  WAL's directory. Ratios: WAL recovery time / SQLite's, and / the raw
  read's (lower is better). No cache is dropped: each store is read back
  right after it was written, from a warm page cache, the same for all three.

PySyncObj (``pip install pysyncobj``, an optional bench dependency) runs as
three processes over localhost TCP, a replicated dict, without a journal
(:mod:`cellmesh.bench._pysyncobj`); without it its rows print "no baseline".
``cellmesh bench replicated`` reuses :func:`cellmesh_throughput` as its "raw
Raft" floor.

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
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Final

import attrs
import trio

from cellmesh.bench import _pysyncobj
from cellmesh.bench._raftnode import (
    NoSync,
    RawInfo,
    RawPropose,
    RawRedirect,
    RawResult,
    RawStatus,
    socket_path,
)
from cellmesh.consensus.config import RaftConfig
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
# PySyncObj baseline (cellmesh.bench._pysyncobj)


def pysyncobj_throughput(*, ops: int, concurrency: int, payload: int) -> Throughput | None:
    """The same pipelined workload on a 3-process PySyncObj cluster; ``None`` if missing."""
    run = _pysyncobj.pipelined(ops=ops, concurrency=concurrency, payload=payload)
    if run is None:
        return None
    seconds, latencies = run
    p50, p99 = _percentiles(latencies)
    return Throughput(ops=ops, seconds=seconds, p50=p50, p99=p99)


def election_timeout(tick: float) -> tuple[float, float]:
    """A raw node's election timeout range in seconds, at ``tick`` seconds per tick."""
    ticks = RaftConfig(id=1).election_tick  # the raw nodes' configuration
    return ticks * tick, 2 * ticks * tick


def heartbeat_period(tick: float) -> float:
    """Seconds between a raw leader's heartbeats, at ``tick`` seconds per tick."""
    return RaftConfig(id=1).heartbeat_tick * tick


def pysyncobj_failover_conf(tick: float) -> dict[str, Any]:
    """PySyncObj's conf for the failover trials: a raw node's timing at ``tick``."""
    return _pysyncobj.failover_conf(
        election_timeout=election_timeout(tick), heartbeat=heartbeat_period(tick), tick=tick
    )


def pysyncobj_failover(*, trials: int, tick: float) -> list[float] | None:
    """:func:`cellmesh_failover` on a 3-process PySyncObj cluster timed like a raw node at
    ``tick`` (:func:`pysyncobj_failover_conf`); ``None`` if PySyncObj is missing."""
    return _pysyncobj.failover(trials=trials, conf=pysyncobj_failover_conf(tick))


# --------------------------------------------------------------------------
# WAL recovery, against SQLite and the raw read of the WAL's files

_BATCH: Final = 1000


def _batches(entries: int) -> Iterator[range]:
    """Indexes ``1..entries`` in runs of :data:`_BATCH` (one WAL batch, one transaction)."""
    for first in range(1, entries + 1, _BATCH):
        yield range(first, min(first + _BATCH, entries + 1))


def fill_wal(directory: Path, entries: int, payload: int) -> None:
    """Write ``entries`` entries of ``payload`` bytes to a new WAL (unsynced, batches of 1000)."""
    data = b"x" * payload
    with WriteAheadLog.open(directory, syncer=NoSync())[0] as wal:
        for batch in _batches(entries):
            wal.save(
                WalBatch(
                    hard_state=HardState(term=1, vote=1, commit=batch[0] - 1),
                    entries=tuple(Entry(index=i, term=1, data=data) for i in batch),
                )
            )


def _timed_wal_open(directory: Path, entries: int) -> float:
    started = time.perf_counter()
    wal, recovered = WriteAheadLog.open(directory)
    elapsed = time.perf_counter() - started
    wal.close()
    assert len(recovered.entries) == entries
    return elapsed


def wal_recovery_seconds(entries: int, payload: int) -> float:
    """Fill a WAL with ``entries`` entries (unsynced, batches of 1000); time its recovery."""
    with tempfile.TemporaryDirectory(prefix="cmw-", ignore_cleanup_errors=True) as name:
        fill_wal(Path(name), entries, payload)
        return _timed_wal_open(Path(name), entries)


def read_files(directory: Path) -> tuple[int, int]:
    """Open and read every file under ``directory`` (the I/O floor of a recovery);
    return how many files and bytes."""
    files = size = 0
    for parent, _dirs, names in os.walk(directory):
        for name in names:
            with open(os.path.join(parent, name), "rb") as file:
                size += len(file.read())
            files += 1
    return files, size


def fill_sqlite(path: Path, entries: int, payload: int) -> None:
    """The same log in a new SQLite database at ``path``: WAL mode, one table ``log (idx
    INTEGER PRIMARY KEY, term INTEGER, data BLOB)``, a transaction per 1000 rows,
    ``synchronous=OFF`` (unsynced, like :func:`fill_wal`)."""
    data = b"x" * payload
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("CREATE TABLE log (idx INTEGER PRIMARY KEY, term INTEGER, data BLOB)")
        for batch in _batches(entries):
            with db:  # one transaction
                db.executemany("INSERT INTO log VALUES (?, 1, ?)", ((i, data) for i in batch))
    finally:
        db.close()


def read_sqlite(path: Path) -> list[tuple[int, int, bytes]]:
    """Connect to :func:`fill_sqlite`'s database; every row of its log, in index order."""
    db = sqlite3.connect(path)
    try:
        query = db.execute("SELECT idx, term, data FROM log ORDER BY idx")
        rows: list[tuple[int, int, bytes]] = query.fetchall()
    finally:
        db.close()
    return rows


@attrs.frozen(kw_only=True)
class Recovery:
    """A log of ``entries`` entries read back at start three ways, in seconds.

    ``wal``: :meth:`WriteAheadLog.open`; ``sqlite``: :func:`read_sqlite` (connect,
    every row into a list, close); ``raw_read``: :func:`read_files` on the WAL's
    directory. Each reads files written just before (no cache drop: from the page
    cache). ``wal_files``/``wal_bytes``/``sqlite_bytes``: sizes on disk.
    """

    entries: int
    wal: float
    sqlite: float
    raw_read: float
    sqlite_rows: int
    wal_files: int
    wal_bytes: int
    sqlite_bytes: int


def wal_recovery(entries: int, payload: int) -> Recovery:
    """Time the recovery of ``entries`` entries of ``payload`` bytes: the WAL, SQLite, raw read."""
    with tempfile.TemporaryDirectory(prefix="cmw-", ignore_cleanup_errors=True) as name:
        wal_dir, db_path = Path(name) / "wal", Path(name) / "log.db"
        fill_wal(wal_dir, entries, payload)
        wal = _timed_wal_open(wal_dir, entries)
        started = time.perf_counter()
        files, size = read_files(wal_dir)
        raw_read = time.perf_counter() - started
        fill_sqlite(db_path, entries, payload)
        started = time.perf_counter()
        rows = read_sqlite(db_path)
        sqlite = time.perf_counter() - started  # before the list is freed
        count = len(rows)
        del rows
        return Recovery(entries=entries, wal=wal, sqlite=sqlite, raw_read=raw_read,
                        sqlite_rows=count, wal_files=files, wal_bytes=size,
                        sqlite_bytes=db_path.stat().st_size)


# --------------------------------------------------------------------------
# Report


Progress = Callable[[str], None]


def _ratio(result: Throughput, base: Throughput | None) -> float | None:
    return result.ops_per_second / base.ops_per_second if base is not None else None


def _spread_ms(times: list[float]) -> dict[str, Any]:
    """Failover samples and their median, min and max, in milliseconds."""
    return {
        "trials": len(times),
        "samples_ms": [t * 1e3 for t in times],
        "median_ms": statistics.median(times) * 1e3,
        "min_ms": min(times) * 1e3,
        "max_ms": max(times) * 1e3,
    }


def _failover_report(params: RaftBenchParams, say: Progress) -> dict[str, Any]:
    """Failover trials on PySyncObj, then on raw Raft: the report's ``failover`` entry."""
    say(f"failover: {params.trials} trials: PySyncObj")
    conf = pysyncobj_failover_conf(params.tick)
    base_times = pysyncobj_failover(trials=params.trials, tick=params.tick)
    say(f"failover: {params.trials} trials: cellmesh")
    times = trio.run(functools.partial(cellmesh_failover, trials=params.trials, tick=params.tick))
    low, high = election_timeout(params.tick)
    return {
        **_spread_ms(times),
        "election_timeout_ms": [low * 1e3, high * 1e3],
        "heartbeat_ms": heartbeat_period(params.tick) * 1e3,
        "pysyncobj": None if base_times is None else {
            **_spread_ms(base_times),
            "election_timeout_ms": [conf["raftMinTimeout"] * 1e3, conf["raftMaxTimeout"] * 1e3],
            "heartbeat_ms": conf["appendEntriesPeriod"] * 1e3,
            "conf": conf,
        },
        "median_vs_pysyncobj": None if base_times is None else (
            statistics.median(times) / statistics.median(base_times)
        ),
    }


def _recovery_report(rec: Recovery, payload: int) -> dict[str, Any]:
    """The report's ``wal_recovery`` entry."""
    return {
        "entries": rec.entries,
        "seconds": rec.wal,
        "entries_per_s": rec.entries / rec.wal,
        "payload": payload,
        "wal_files": rec.wal_files,
        "wal_bytes": rec.wal_bytes,
        "raw_read": {
            "seconds": rec.raw_read,
            "files": rec.wal_files,
            "bytes": rec.wal_bytes,
            "mb_per_s": rec.wal_bytes / max(rec.raw_read, 1e-9) / 1e6,
        },
        "sqlite": {
            "seconds": rec.sqlite,
            "rows": rec.sqlite_rows,
            "entries_per_s": rec.sqlite_rows / rec.sqlite,
            "db_bytes": rec.sqlite_bytes,
        },
        "vs_sqlite": rec.wal / rec.sqlite,
        "vs_raw_read": rec.wal / max(rec.raw_read, 1e-9),
    }


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
        report["failover"] = _failover_report(params, say)
        report["pysyncobj_installed"] = (
            report["pysyncobj_installed"] and report["failover"]["pysyncobj"] is not None
        )
    if params.wal_entries:
        say(f"WAL recovery: {params.wal_entries} entries (WAL, SQLite, raw read)")
        report["wal_recovery"] = _recovery_report(
            wal_recovery(params.wal_entries, params.payload), params.payload
        )
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


_NO_BASELINE: Final = "  PySyncObj not installed (pip install pysyncobj): no baseline"


def _failover_rows(failover: dict[str, Any], params: dict[str, Any]) -> list[str]:
    def row(name: str, spread: dict[str, Any], tail: str) -> str:
        low, high = spread["election_timeout_ms"]
        return (
            f"  {name:<34} median {spread['median_ms']:5.0f} ms   min {spread['min_ms']:5.0f} ms"
            f"   max {spread['max_ms']:5.0f} ms   election timeout {low:.0f}-{high:.0f} ms, "
            f"heartbeat {spread['heartbeat_ms']:.0f} ms{tail}"
        )

    base = failover["pysyncobj"]
    ratio = failover["median_vs_pysyncobj"]
    lines = [
        f"Raft failover: kill -9 of the leader -> next committed proposal, {failover['trials']} "
        f"trials, tick {params['tick'] * 1e3:.0f} ms"
    ]
    if base is None:
        lines.append(_NO_BASELINE)
    else:
        lines.append(row("PySyncObj (no journal)", base, " (set to raw Raft's)"))
    shown = f"{ratio:.2f}x" if ratio is not None else "n/a"
    lines.append(
        row("raw Raft (fdatasync per batch)", failover,
            f"   vs PySyncObj {shown} (median / median; time: lower is better)")
    )
    return lines


def _recovery_rows(recovery: dict[str, Any]) -> list[str]:
    raw, sqlite = recovery["raw_read"], recovery["sqlite"]
    return [
        f"WAL recovery: {recovery['entries']:,} entries of {recovery['payload']} bytes, each "
        "store read back right after it was written (page cache warm on every side, no cache "
        "drop)",
        f"  {'raw read of the WAL files (floor)':<34} {raw['seconds']:7.3f} s   "
        f"{raw['mb_per_s']:9,.0f} MB/s      ({raw['bytes']:,} bytes in {raw['files']} files)",
        f"  {'SQLite (WAL mode, every row)':<34} {sqlite['seconds']:7.3f} s   "
        f"{sqlite['entries_per_s']:9,.0f} entries/s ({sqlite['rows']:,} rows, "
        f"{sqlite['db_bytes']:,}-byte database)",
        f"  {'WriteAheadLog.open':<34} {recovery['seconds']:7.3f} s   "
        f"{recovery['entries_per_s']:9,.0f} entries/s   vs SQLite {recovery['vs_sqlite']:.2f}x, "
        f"vs raw read {recovery['vs_raw_read']:.1f}x (time: lower is better)",
    ]


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
            lines.append(_NO_BASELINE)
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
    if report["failover"] is not None:
        lines += _failover_rows(report["failover"], params)
    if report["wal_recovery"] is not None:
        lines += _recovery_rows(report["wal_recovery"])
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
    "Recovery",
    "Throughput",
    "cellmesh_failover",
    "cellmesh_throughput",
    "election_timeout",
    "fill_sqlite",
    "fill_wal",
    "format_raft_report",
    "heartbeat_period",
    "main",
    "pipelined",
    "pysyncobj_failover",
    "pysyncobj_failover_conf",
    "pysyncobj_throughput",
    "raw_cluster",
    "read_files",
    "read_sqlite",
    "run_raft_bench",
    "wal_recovery",
    "wal_recovery_seconds",
]

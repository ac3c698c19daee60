"""The SQLite baselines of the ledger bench's concurrent clients sending single transfers.

Theory of operation
-------------------
The replicated mode's last figure (:mod:`cellmesh.bench.ledger_replicated`)
is ``clients`` client sessions each sending single-transfer
``CreateTransfers`` commands one after the other, ``single_ops`` in all,
each answered once a majority of the replicas has it on disk. Its baselines
are the same pattern in stdlib ``sqlite3`` against the ledger of the batch
baseline (:class:`~cellmesh.bench._ledger_sqlite.SqliteLedger`: same schema,
same checks, WAL mode, ``synchronous=FULL``), so that every transfer a
client has been answered for is on disk too. Python clients are threads
(``sqlite3`` releases the GIL while SQLite works, fsyncs included):

* **connections** -- what a Python user writes for "64 clients": 64
  threads, each with its own connection, each transfer its own transaction
  (``BEGIN IMMEDIATE`` ... ``COMMIT``: one fsync), a writer waiting for the
  lock through ``busy_timeout`` and retrying on ``SQLITE_BUSY`` (counted).
  SQLite admits one writer at a time, so this is one fsync'd commit per
  transfer whatever the number of threads, and the waiting writers poll
  the lock with sleeps (SQLite's busy handler): the lock is sometimes free
  with nobody taking it, and which writer gets it next is luck (the p99).
* **group commit** -- one writer thread owns the one connection; each
  client thread hands it a transfer through a queue and waits for its own
  answer; the writer takes everything queued (at most one per client),
  applies it as one batch of independent events in one transaction and
  answers each client after the ``COMMIT``, so after the fsync. One commit
  per group, not per transfer: what the replicated cell does with its
  Raft entries. Within a group every event is checked against the state
  its predecessors left, exactly as one transaction each would be; what
  differs is only that a failed commit fails the whole group (a client
  would retry it, as after any failed commit).

Which is the stronger simple baseline was measured, not assumed (64 clients
on the project's 2-core VM, where an fsync costs about 0.2 ms; 2026-12-05,
two ``--quick`` runs and one full run, so orders of magnitude only): one
connection alone commits about 3,000 single transfers/s; 64 connections
managed 160-430/s on the ``--quick`` plan (640 transfers: the run waits for
its most starved writers) and 1,230/s on the full one (6,400), p50 under a
millisecond but p99 in seconds, some writers giving up after
``busy_timeout`` and retrying (most likely the busy handler's sleeps, and 64
threads taking turns at the GIL while the lock holder waits for it to start
its next transaction; 4 connections already fall to about 900/s); the group
commit did 5,800-7,700/s on the ``--quick`` plan and 3,900/s on the full one
(under a load average of 3), about 32 transfers per commit, p99 20-45 ms. So
the group commit is the stronger, three to thirty times, and it is still
simple: a queue, a thread and the batch baseline's own ``create_transfers``
-- some forty-five lines for the writer and the hand-off (seventy with the
timing and the failure path), nothing a careful Python user would not write.
Both rows are printed, each with the ratio replicated / SQLite: the group
commit is the bar; the connections form is kept beside it because it is the
one users write first (the connection-per-request shape of every web
framework), and the distance between the two is what group commit, not the
database, is worth to a concurrent workload. (A Python lock around each
transaction instead of SQLite's busy handler would remove the sleeping but
not the one fsync'd commit per transfer: it is bounded by the single
connection's rate, below the group commit.)

The plan (:func:`single_plan`) is the replicated round's: the same
``single_ops`` transfers of 1 between two distinct funded accounts (the
batch workload's), ids ``SINGLE_IDS + seed * single_ops + n``. Result codes
are kept by plan index on both sides and compared event for event (all
``ok`` here, as in the replicated run).

The database: the caller prepares, once per run, a file in the state the
replicated ledger is in when its clients start (set-up and measured batches
applied, the expiries that fell due since done); every baseline of every
round works on its own copy of it (fsync'd before the clock starts,
removed after), so each starts from the same state, as each replicated
round starts a fresh ledger.

Figures: ``single_ops`` over the wall-clock time from the moment every
client is ready (connection open) to the last answer; per-transfer latency
from a client's call to its answer; commits (the connections: one per
transfer; the group commit: one per group); ``SQLITE_BUSY`` retries.
Timestamps are ``time.time_ns()`` per transaction, each connection's kept
strictly increasing by :class:`SqliteLedger` (not unique across connections:
SQLite does not need them to be).
"""

from __future__ import annotations

import os
import queue
import random
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Final

import attrs

from ..ledger import Transfer
from ._ledger_sqlite import SqliteLedger

#: Ids of the concurrent clients' transfers (far from the batch workload's).
SINGLE_IDS: Final = 1 << 60
#: How long the runner waits for every client to open its connection.
_READY_TIMEOUT: Final = 60.0
_WAL_FILES: Final = ("", "-wal", "-shm")


@attrs.define
class SinglesRun:
    """One baseline run: codes by plan index, per-transfer latencies, wall time, commits."""

    results: list[int]
    latencies: list[float] = attrs.Factory(list)
    seconds: float = 0.0
    commits: int = 0
    busy_retries: int = 0


def single_plan(accounts: Sequence[int], ops: int, seed: int) -> list[Transfer]:
    """The ``ops`` single transfers of round ``seed`` (the replicated round's too)."""
    rng = random.Random(seed)
    plan = []
    for n in range(ops):
        debit, credit = rng.sample(accounts, 2)
        plan.append(Transfer(id=SINGLE_IDS + seed * ops + n, debit_account_id=debit,
                             credit_account_id=credit, amount=1, ledger=1, code=1))
    return plan


def _clients(count: int, client: Callable[[threading.Barrier], tuple[list[float], int]],
             run: SinglesRun) -> None:
    """Run ``count`` client threads from one start line; their figures go to ``run``."""
    ready = threading.Barrier(count + 1, timeout=_READY_TIMEOUT)
    with ThreadPoolExecutor(count, thread_name_prefix="ledger-client") as pool:
        futures: list[Future[tuple[list[float], int]]] = [
            pool.submit(client, ready) for _ in range(count)]
        try:
            ready.wait()
        except threading.BrokenBarrierError:
            for f in futures:  # a client that failed to start says why
                if f.done() and f.exception() is not None:
                    f.result()
            raise
        started = time.perf_counter()
        for f in futures:
            latencies, retries = f.result()
            run.latencies += latencies
            run.busy_retries += retries
        run.seconds = time.perf_counter() - started


def _is_busy(error: sqlite3.OperationalError) -> bool:
    return error.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY


def run_connections(path: Path, plan: Sequence[Transfer], clients: int) -> SinglesRun:
    """``clients`` threads, a connection each, each transfer its own transaction."""
    run = SinglesRun(results=[-1] * len(plan), commits=len(plan))
    work: queue.SimpleQueue[int] = queue.SimpleQueue()
    for n in range(len(plan)):
        work.put(n)

    def client(ready: threading.Barrier) -> tuple[list[float], int]:
        try:
            ledger = SqliteLedger(path, shared=True)
        except BaseException:
            ready.abort()
            raise
        latencies: list[float] = []
        retries = 0
        try:
            ready.wait()
            while True:
                try:
                    n = work.get_nowait()
                except queue.Empty:
                    return latencies, retries
                started = time.perf_counter()
                while True:
                    try:
                        (code,) = ledger.create_transfers([plan[n]], time.time_ns())
                        break
                    except sqlite3.OperationalError as error:
                        if not _is_busy(error):
                            raise
                        if ledger.db.in_transaction:
                            ledger.db.rollback()
                        retries += 1
                latencies.append(time.perf_counter() - started)
                run.results[n] = code
        finally:
            ledger.close()

    _clients(clients, client, run)
    return run


def run_group_commit(path: Path, plan: Sequence[Transfer], clients: int) -> SinglesRun:
    """``clients`` threads handing their transfers to one writer that commits them in groups."""
    run = SinglesRun(results=[-1] * len(plan))
    work: queue.SimpleQueue[int] = queue.SimpleQueue()
    for n in range(len(plan)):
        work.put(n)
    inbox: queue.SimpleQueue[tuple[int, queue.SimpleQueue[int | None]] | None] = (
        queue.SimpleQueue())
    opened = threading.Event()
    failure: list[BaseException] = []

    def writer() -> None:
        try:
            ledger = SqliteLedger(path)
        except BaseException as error:
            failure.append(error)
            raise
        finally:
            opened.set()
        try:
            while (first := inbox.get()) is not None:
                group = [first]
                while True:  # everything queued meanwhile: at most one per client
                    try:
                        item = inbox.get_nowait()
                    except queue.Empty:
                        break
                    assert item is not None, "the writer stops once every client is done"
                    group.append(item)
                codes: Sequence[int | None] = [None] * len(group)
                if not failure:
                    try:
                        codes = ledger.create_transfers([plan[n] for n, _ in group],
                                                        time.time_ns())
                        run.commits += 1
                    except BaseException as error:  # answer the clients, then say why
                        failure.append(error)
                for (_, reply), code in zip(group, codes, strict=True):
                    reply.put(code)
        finally:
            ledger.close()

    def client(ready: threading.Barrier) -> tuple[list[float], int]:
        reply: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        latencies: list[float] = []
        ready.wait()
        while True:
            try:
                n = work.get_nowait()
            except queue.Empty:
                return latencies, 0
            started = time.perf_counter()
            inbox.put((n, reply))
            code = reply.get()
            if code is None:  # the writer failed
                return latencies, 0
            latencies.append(time.perf_counter() - started)
            run.results[n] = code

    with ThreadPoolExecutor(1, thread_name_prefix="ledger-writer") as one:
        done = one.submit(writer)
        opened.wait()
        if not failure:
            try:
                _clients(clients, client, run)
            finally:
                inbox.put(None)
                done.result()
    if failure:
        raise failure[0]
    return run


def copy_database(template: Path, path: Path) -> None:
    """Copy a closed SQLite ledger file (and any WAL left) to ``path``, on disk."""
    for suffix in _WAL_FILES[:2]:
        source = Path(f"{template}{suffix}")
        if source.exists():
            shutil.copyfile(source, f"{path}{suffix}")
            fd = os.open(f"{path}{suffix}", os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def remove_database(path: Path) -> None:
    """Remove a SQLite file and its WAL and shared-memory files."""
    for suffix in _WAL_FILES:
        Path(f"{path}{suffix}").unlink(missing_ok=True)


#: The baselines, in the order a round runs them (module doc).
FORMS: Final[dict[str, Callable[[Path, Sequence[Transfer], int], SinglesRun]]] = {
    "connections": run_connections,
    "group_commit": run_group_commit,
}


def run_baselines(template: Path, scratch: Path, plan: Sequence[Transfer],
                  clients: int) -> dict[str, SinglesRun]:
    """Every form of :data:`FORMS` on its own copy of ``template`` under ``scratch``."""
    runs = {}
    for form, runner in FORMS.items():
        path = scratch / f"singles-{form}-{time.monotonic_ns()}.sqlite3"
        try:
            copy_database(template, path)
            runs[form] = runner(path, plan, clients)
        finally:
            remove_database(path)
    return runs


__all__ = ["FORMS", "SINGLE_IDS", "SinglesRun", "copy_database", "remove_database",
           "run_baselines", "run_connections", "run_group_commit", "single_plan"]

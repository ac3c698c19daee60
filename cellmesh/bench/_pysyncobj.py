"""PySyncObj, the baseline of ``cellmesh bench raft``: pipelined commands and failover.

Theory of operation
-------------------
PySyncObj (``pip install pysyncobj``, an optional bench dependency) runs as
three nodes over localhost TCP, each a replicated dict (:data:`NODE_SCRIPT`,
run with ``python -c``). Its conf, as JSON, and the nodes' addresses are the
script's arguments. A node whose stdin is open is *controlled*: it answers
each request line with one reply line --

* ``propose key=value``: ``ok`` once the command is committed and applied,
  ``redirect`` at once if the node does not lead (what a raw cellmesh node
  answers too), ``failed ...`` or ``timeout`` otherwise;
* ``status``: a JSON object, whether it leads, its commit and applied
  indexes, and how many of its peers it is connected to.

Two measurements use it:

* :func:`pipelined` -- the pipelined workload of ``cellmesh bench raft``: two
  uncontrolled node processes and one node in this process, the client,
  which keeps ``concurrency`` commands in flight through the library's
  callback API. :func:`cellmesh.bench.raft.pysyncobj_throughput` turns its
  timings into a :class:`~cellmesh.bench.raft.Throughput`.
* :func:`failover` -- three controlled processes; per trial, ``kill -9`` of
  the leader, then a ``propose`` on each survivor in turn (every
  :data:`_POLL` seconds) until one commits; the killed node is restarted
  between trials, and the next trial starts once every node is connected to
  both others and has applied everything the leader committed (otherwise
  PySyncObj's reconnect period, not its failover, would be measured).
  :func:`failover_conf` sets PySyncObj's timing to the cellmesh node's: its
  election timeout range, its heartbeat period and its tick.

Nothing here fsyncs: PySyncObj runs without a journal file (its log is in
memory; a restarted node catches up from the leader).
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import attrs

from cellmesh.errors import CellmeshError

#: Nodes in a PySyncObj cluster (as many as the cellmesh cluster's voters).
NODES: Final = 3
_POLL: Final = 0.01
#: As :data:`cellmesh.bench.raft.WAIT_LIMIT`: the longest a wait for what a
#: cluster always does in well under a second may take before the bench gives up.
_WAIT_LIMIT: Final = 60.0

#: PySyncObj's strongest setting for this workload: ``appendEntriesUseBatch=False``
#: sends each entry at once; its default batches appends per 100 ms period, which
#: made one call in flight take ~205 ms (a strawman: 1.7 ms without it).
BASE_CONF: Final[dict[str, Any]] = {
    "dynamicMembershipChange": False,
    "appendEntriesUseBatch": False,
}

#: One PySyncObj node: ``python -c NODE_SCRIPT CONF_JSON SELF_ADDR PEER_ADDR...``
#: (the protocol of a controlled node is in the module docstring). A proposal
#: waits at most 5 s for its commit.
NODE_SCRIPT: Final = r"""
import json, sys, threading, time
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated

class KV(SyncObj):
    def __init__(self, me, others, conf):
        super().__init__(me, others, SyncObjConf(**conf))
        self._data = {}

    @replicated
    def set(self, key, value):
        old = self._data.get(key, b"")
        self._data[key] = value
        return old

def propose(node, command):
    if not node._isLeader():
        return "redirect"
    key, _, value = command.encode().partition(b"=")
    done, errors = threading.Event(), []
    def callback(result, error):
        errors.append(error)
        done.set()
    node.set(key, value, callback=callback)
    if not done.wait(5.0):
        return "timeout"
    return "ok" if errors[0] == FAIL_REASON.SUCCESS else "failed %s" % errors[0]

def status(node):
    return json.dumps({
        "leader": node._isLeader(),
        "commit": node.raftCommitIndex,
        "applied": node.raftLastApplied,
        "connected": sum(node.isNodeConnected(peer) for peer in node.otherNodes),
    })

node = KV(sys.argv[2], sys.argv[3:], json.loads(sys.argv[1]))
for line in sys.stdin:
    verb, _, arg = line.strip().partition(" ")
    sys.stdout.write((propose(node, arg) if verb == "propose" else status(node)) + "\n")
    sys.stdout.flush()
while True:  # no (more) requests: serve the cluster until killed
    time.sleep(1)
"""


def installed() -> bool:
    """Whether PySyncObj can be imported (every measurement here returns None if not)."""
    try:
        import pysyncobj  # type: ignore[import-untyped,import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _addresses() -> tuple[str, ...]:
    return tuple(f"127.0.0.1:{_free_port()}" for _ in range(NODES))


def _spawn(
    conf: dict[str, Any], addrs: tuple[str, ...], node: int, *, controlled: bool
) -> subprocess.Popen[str]:
    me = addrs[node]
    return subprocess.Popen(
        [sys.executable, "-c", NODE_SCRIPT, json.dumps(conf), me, *(a for a in addrs if a != me)],
        stdin=subprocess.PIPE if controlled else subprocess.DEVNULL,
        stdout=subprocess.PIPE if controlled else None,
        text=True,
        bufsize=1,
    )


def _reap(proc: subprocess.Popen[str]) -> None:
    proc.kill()  # SIGKILL
    proc.wait()
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


# --------------------------------------------------------------------------
# throughput


def pipelined(*, ops: int, concurrency: int, payload: int) -> tuple[float, list[float]] | None:
    """``ops`` commands, ``concurrency`` in flight, on a fresh cluster, after a warm-up.

    Returns the run's seconds and each command's latency (submitted -> its
    callback), or ``None`` if PySyncObj is not installed.
    """
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
            super().__init__(me, others, SyncObjConf(**BASE_CONF))
            self._data: dict[bytes, bytes] = {}

        @replicated  # type: ignore[untyped-decorator,misc,unused-ignore]
        def set(self, key: bytes, value: bytes) -> bytes:
            old = self._data.get(key, b"")
            self._data[key] = value
            return old

    addrs = _addresses()
    procs = [_spawn(BASE_CONF, addrs, i, controlled=False) for i in range(1, NODES)]
    node = KV(addrs[0], list(addrs[1:]))
    try:
        while node._getLeader() is None:
            time.sleep(_POLL)

        def run(count: int) -> tuple[float, list[float]]:
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
            return time.perf_counter() - began, latencies

        run(max(1, min(ops // 10, 2000)))  # warm-up (at least one op: zero never ends)
        return run(ops)
    finally:
        node.destroy()
        for proc in procs:
            _reap(proc)


# --------------------------------------------------------------------------
# failover


def failover_conf(
    *, election_timeout: tuple[float, float], heartbeat: float, tick: float
) -> dict[str, Any]:
    """PySyncObj's conf for :func:`failover`: the timing of the cellmesh node it is compared to.

    ``raftMinTimeout``/``raftMaxTimeout`` are the cellmesh election timeout
    range (seconds), ``appendEntriesPeriod`` its heartbeat period, and
    ``autoTickPeriod`` (how long PySyncObj's loop waits for I/O before it
    checks its timers) its tick. ``connectionRetryTime`` (5 s by default) only
    shortens the wait for a restarted node between trials; the timeouts
    PySyncObj requires to exceed the election timeout are raised if needed.
    """
    low, high = election_timeout
    return {
        **BASE_CONF,
        "raftMinTimeout": low,
        "raftMaxTimeout": high,
        "appendEntriesPeriod": heartbeat,
        "autoTickPeriod": tick,
        "connectionRetryTime": 0.5,
        "connectionTimeout": max(3.5, high),
        "leaderFallbackTimeout": max(30.0, 2 * heartbeat),
    }


@attrs.define(eq=False)
class _Cluster:
    """Controlled node processes (see the module docstring), started and killed by index."""

    conf: dict[str, Any]
    addrs: tuple[str, ...] = attrs.Factory(_addresses)
    procs: dict[int, subprocess.Popen[str]] = attrs.Factory(dict)

    def start(self, node: int) -> None:
        """Start (or restart, with an empty log) node ``node``."""
        self.procs[node] = _spawn(self.conf, self.addrs, node, controlled=True)

    def kill(self, node: int) -> None:
        """SIGKILL node ``node`` and reap it."""
        _reap(self.procs.pop(node))

    def ask(self, node: int, request: str) -> str:
        """Send one request line to node ``node``; return its reply line."""
        proc = self.procs[node]
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(request + "\n")
            proc.stdin.flush()
            reply = proc.stdout.readline()
        except OSError:
            reply = ""
        if not reply:
            raise CellmeshError(f"PySyncObj node {node} exited (its output is above)")
        return reply.rstrip("\n")

    def status(self, node: int) -> dict[str, Any]:
        """Node ``node``'s status (see the module docstring)."""
        info: dict[str, Any] = json.loads(self.ask(node, "status"))
        return info


@contextmanager
def _cluster(conf: dict[str, Any]) -> Iterator[_Cluster]:
    cluster = _Cluster(conf)
    try:
        for node in range(NODES):
            cluster.start(node)
        yield cluster
    finally:
        for node in list(cluster.procs):
            cluster.kill(node)


def _polling(what: str) -> Iterator[None]:
    """Yield every :data:`_POLL` seconds; CellmeshError naming ``what`` after the limit."""
    limit = time.monotonic() + _WAIT_LIMIT
    while True:
        yield
        if time.monotonic() > limit:
            raise CellmeshError(f"no {what} after {_WAIT_LIMIT:.0f} s: the PySyncObj nodes "
                                "died or are stuck (their output is above)")
        time.sleep(_POLL)


def _commit_somewhere(cluster: _Cluster, nodes: tuple[int, ...], command: str) -> int:
    """Propose ``command`` on whichever node accepts it; return that node."""
    for _ in _polling(f"commit of {command!r}"):
        for node in nodes:
            if cluster.ask(node, f"propose {command}") == "ok":
                return node
    raise AssertionError("unreachable")


def _settle(cluster: _Cluster, leader: int) -> None:
    """Wait until every node is connected to both others and applied what ``leader`` committed."""
    for _ in _polling("fully connected and caught-up PySyncObj cluster"):
        states = [cluster.status(node) for node in cluster.procs]
        commit = cluster.status(leader)["commit"]
        if all(s["connected"] == NODES - 1 and s["applied"] >= commit for s in states):
            return


def failover(*, trials: int, conf: dict[str, Any]) -> list[float] | None:
    """Seconds from ``kill -9`` of the leader to the next committed command, per trial.

    ``conf`` is the nodes' conf (:func:`failover_conf`); ``None`` if PySyncObj
    is not installed.
    """
    if not installed():
        return None
    times = []
    with _cluster(conf) as cluster:
        leader = _commit_somewhere(cluster, tuple(range(NODES)), "warm=up")
        for trial in range(trials):
            _settle(cluster, leader)
            cluster.kill(leader)
            started = time.perf_counter()
            survivors = tuple(n for n in range(NODES) if n != leader)
            new_leader = _commit_somewhere(cluster, survivors, f"trial={trial}")
            times.append(time.perf_counter() - started)
            cluster.start(leader)
            leader = new_leader
    return times


__all__ = [
    "BASE_CONF",
    "NODES",
    "NODE_SCRIPT",
    "failover",
    "failover_conf",
    "installed",
    "pipelined",
]

"""A real multi-process Raft cluster for tests: key-value nodes you can kill -9.

Each node is ``python -m cellmesh.consensus.serve`` with its own data
directory (a real WAL on disk) in a private temporary directory, talking to
its peers over Unix sockets. Clients reach a node through
:func:`cellmesh.consensus.serve.open_raft_client`. The context manager kills
every process it started, whatever happens in the block.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import attrs
import trio

from cellmesh.consensus.serve import RaftClient, client_socket_path


@attrs.define(eq=False)
class ProcessCluster:
    """Node processes of one cluster; ``start``/``kill`` them by node id."""

    root: Path
    voters: tuple[int, ...]
    tick: float
    #: More ``cellmesh.consensus.serve`` arguments for every node.
    extra_args: tuple[str, ...] = ()
    procs: dict[int, subprocess.Popen[bytes]] = attrs.Factory(dict)

    def client_path(self, node: int) -> Path:
        """The client socket of ``node``."""
        return client_socket_path(self.root, node)

    def start(self, node: int) -> None:
        """Start (or restart, from its WAL) node ``node``."""
        self.client_path(node).unlink(missing_ok=True)
        self.procs[node] = subprocess.Popen(
            [
                sys.executable, "-m", "cellmesh.consensus.serve",
                "--id", str(node),
                "--voters", ",".join(map(str, self.voters)),
                "--data-dir", str(self.root / f"data-{node}"),
                "--socket-dir", str(self.root),
                "--tick", str(self.tick),
                *self.extra_args,
            ],
        )

    def kill(self, node: int) -> None:
        """SIGKILL node ``node`` and reap it."""
        proc = self.procs.pop(node)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    async def wait_serving(self, node: int) -> None:
        """Wait until ``node`` accepts client connections."""
        path = os.fspath(self.client_path(node))
        while True:
            try:
                stream = await trio.open_unix_socket(path)
            except OSError:
                await trio.sleep(0.02)  # the process is still starting
                continue
            await stream.aclose()
            return


@contextmanager
def process_cluster(
    voters: Sequence[int] = (1, 2, 3), tick: float = 0.02, extra_args: Sequence[str] = ()
) -> Iterator[ProcessCluster]:
    """Start one process per voter; kill them all on exit."""
    with tempfile.TemporaryDirectory(prefix="cmc-", dir="/tmp") as name:
        cluster = ProcessCluster(Path(name), tuple(voters), tick, tuple(extra_args))
        try:
            for node in cluster.voters:
                cluster.start(node)
            yield cluster
        finally:
            for proc in cluster.procs.values():
                proc.kill()
                proc.wait()


async def find_leader(clients: Mapping[int, RaftClient]) -> int:
    """Ask every node until one reports itself leader; return its id."""
    while True:
        for node, client in clients.items():
            try:
                role = (await client.status())[0]
            except (trio.BrokenResourceError, OSError):
                continue
            if role == "LEADER":
                return node
        await trio.sleep(0.02)  # an election is in progress

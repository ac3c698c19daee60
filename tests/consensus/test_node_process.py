"""A real 3-process Raft cluster over Unix sockets; the leader is killed with SIGKILL.

Sections 5.2 and 5.4 end to end: after ``kill -9`` of the leader a new one
is elected, no acknowledged write is lost, and the killed node restarts
from its write-ahead log and catches up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs
import pytest
import trio

from cellmesh.consensus.errors import NotLeader
from cellmesh.consensus.serve import RaftClient, client_socket_path, open_raft_client

VOTERS = (1, 2, 3)
TICK = "0.02"


@attrs.define
class Processes:
    root: Path
    procs: dict[int, subprocess.Popen[bytes]] = attrs.Factory(dict)

    def start(self, node: int) -> None:
        client_socket_path(self.root, node).unlink(missing_ok=True)
        self.procs[node] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cellmesh.consensus.serve",
                "--id",
                str(node),
                "--voters",
                ",".join(map(str, VOTERS)),
                "--data-dir",
                str(self.root / f"data-{node}"),
                "--socket-dir",
                str(self.root),
                "--tick",
                TICK,
            ],
        )

    def kill(self, node: int) -> None:
        proc = self.procs.pop(node)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


@contextmanager
def processes() -> Iterator[Processes]:
    with tempfile.TemporaryDirectory(prefix="cmp-", dir="/tmp") as name:
        ps = Processes(Path(name))
        try:
            yield ps
        finally:
            for proc in ps.procs.values():
                proc.kill()
                proc.wait()


async def connect(ps: Processes, node: int) -> trio.SocketStream:
    """Wait for ``node``'s client socket to accept (the process is starting)."""
    path = client_socket_path(ps.root, node)
    while True:
        try:
            return await trio.open_unix_socket(os.fspath(path))
        except OSError:
            await trio.sleep(0.02)  # the child process is still starting: retry


async def find_leader(clients: dict[int, RaftClient]) -> int:
    """Ask every node until one reports itself leader."""
    while True:
        for node, client in clients.items():
            role = (await client.status())[0]
            if role == "LEADER":
                return node
        await trio.sleep(0.02)  # election in progress: ask again shortly


@pytest.mark.slow
async def test_node_process_cluster_survives_kill_9_of_the_leader() -> None:
    with processes() as ps, trio.fail_after(60):
        for node in VOTERS:
            ps.start(node)
        for node in VOTERS:
            await (await connect(ps, node)).aclose()
        async with (
            open_raft_client(client_socket_path(ps.root, 1)) as c1,
            open_raft_client(client_socket_path(ps.root, 2)) as c2,
            open_raft_client(client_socket_path(ps.root, 3)) as c3,
        ):
            clients = {1: c1, 2: c2, 3: c3}
            leader = await find_leader(clients)
            follower = next(n for n in VOTERS if n != leader)
            with pytest.raises(NotLeader) as info:
                await clients[follower].propose(b"x=0")
            assert info.value.leader_hint in (leader, None)
            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(clients[leader].propose, b"k%d=%d" % (i, i))
            await clients[leader].propose(b"last=before-kill")

            ps.kill(leader)
            survivors = {n: c for n, c in clients.items() if n != leader}
            new_leader = await find_leader(survivors)
            assert new_leader != leader
            assert await survivors[new_leader].read(b"last") == b"before-kill"
            assert await survivors[new_leader].read(b"k49") == b"49"
            await survivors[new_leader].propose(b"last=after-kill")

        ps.start(leader)
        await (await connect(ps, leader)).aclose()
        async with open_raft_client(client_socket_path(ps.root, leader)) as restarted:
            # A linearizable read through the restarted node sees the write made
            # while it was dead: it recovered its log and caught up.
            while True:
                try:
                    value = await restarted.read(b"last")
                    break
                except NotLeader:
                    await trio.sleep(0.02)  # it has not heard from the leader yet
            assert value == b"after-kill"
            assert await restarted.read(b"k0") == b"0"

"""Raft over membranes: a 3-node cluster in one Trio run, over real Unix sockets."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import trio

from cellmesh import Synapse
from cellmesh.consensus import NodeOptions, RaftConfig, RaftNode, Role, open_raft_node
from cellmesh.consensus.membrane_transport import (
    MembraneTransport,
    Packet,
    open_membrane_transport,
)
from cellmesh.consensus.serve import KeyValueMachine

VOTERS = [1, 2, 3]
CELLS = {n: f"raft-{n}" for n in VOTERS}


async def find_leader(nodes: dict[int, RaftNode]) -> RaftNode:
    while True:
        for node in nodes.values():
            if node.status().role is Role.LEADER:
                return node
        await trio.sleep(0.01)


async def test_raft_cluster_over_membranes_replicates_and_survives_a_restart() -> None:
    """§5.2-5.3 end to end over membranes; a follower stopped and restarted
    catches up from its WAL and the leader; garbage packets are only counted."""
    with tempfile.TemporaryDirectory(prefix="cmr-", dir="/tmp") as name, trio.fail_after(60):
        root = Path(name)
        machines = {n: KeyValueMachine() for n in VOTERS}
        nodes: dict[int, RaftNode] = {}
        transports: dict[int, MembraneTransport] = {}
        scopes: dict[int, trio.CancelScope] = {}

        async def run(node_id: int, task_status: trio.TaskStatus[RaftNode]) -> None:
            with trio.CancelScope() as scope:
                scopes[node_id] = scope
                async with (
                    open_membrane_transport(
                        node_id, CELLS[node_id], CELLS, socket_dir=root / "run"
                    ) as transport,
                    open_raft_node(
                        RaftConfig(id=node_id),
                        voters=VOTERS,
                        directory=root / f"data-{node_id}",
                        transport=transport,
                        state_machine=machines[node_id],
                        options=NodeOptions(tick_interval=0.01),
                        rng=random.Random(node_id),
                    ) as node,
                ):
                    transports[node_id] = transport
                    task_status.started(node)
                    await trio.sleep_forever()

        async with trio.open_nursery() as nursery:
            for node_id in VOTERS:
                nodes[node_id] = await nursery.start(run, node_id)
            leader = await find_leader(nodes)
            for i in range(10):
                await leader.propose(b"k%d=%d" % (i, i))
            for node in nodes.values():
                assert await node.read(b"k9") == b"9"

            # A hostile peer's packet is counted, not fatal.
            async with Synapse.grow(CELLS[leader.id], socket_dir=root / "run") as syn:
                await syn.signal(Packet(b"\xff not a raft message"))
            with trio.fail_after(5):
                while transports[leader.id].stats.malformed == 0:
                    await trio.sleep(0.01)

            # Stop a follower, write more, restart it: it catches up.
            follower = next(n for n in VOTERS if n != leader.id)
            scopes[follower].cancel()
            for i in range(10, 20):
                await leader.propose(b"k%d=%d" % (i, i))
            machines[follower] = KeyValueMachine()
            nodes[follower] = await nursery.start(run, follower)
            await nodes[follower].wait_leader()
            assert await nodes[follower].read(b"k19") == b"19"
            assert machines[follower].data[b"k19"] == b"19"
            nursery.cancel_scope.cancel()

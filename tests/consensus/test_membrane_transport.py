"""Raft over membranes, the one transport Raft runs on: a 3-node cluster in one Trio run over
real Unix sockets, hostile peers, bursts, reconnection, and the in-memory network's rules."""

from __future__ import annotations

import random
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from cellmesh import Receptors, Synapse, open_membrane
from cellmesh.consensus import NodeOptions, RaftConfig, RaftNode, Role, open_raft_node
from cellmesh.consensus.membrane_transport import (
    QUEUE_SIZE,
    MembraneTransport,
    Packet,
    open_membrane_transport,
)
from cellmesh.consensus.messages import Message, MessageType
from cellmesh.consensus.transport import MemoryNetwork
from cellmesh.testing.kvsm import KeyValueMachine

VOTERS = [1, 2, 3]


def paths(root: Path) -> dict[int, Path]:
    (root / "run").mkdir(mode=0o700, exist_ok=True)
    return {n: root / "run" / f"raft-{n}.sock" for n in VOTERS}


@asynccontextmanager
async def endpoint(node: int, peers: dict[int, Path]) -> AsyncIterator[MembraneTransport]:
    """A transport for ``node`` and the membrane serving its packets."""
    async with open_membrane_transport(node, peers) as transport:
        receptors = Receptors({Packet: transport.on_packet})
        async with open_membrane(f"raft-{node}", receptors, socket_path=peers[node]):
            yield transport


async def find_leader(nodes: dict[int, RaftNode]) -> RaftNode:
    while True:
        for node in nodes.values():
            if node.status().role is Role.LEADER:
                return node
        await trio.sleep(0.01)  # an election is in progress


async def test_raft_cluster_over_membranes_replicates_and_survives_a_restart() -> None:
    """§5.2-5.3 end to end over membranes; a follower stopped and restarted
    catches up from its WAL and the leader; garbage packets and garbage bytes on a
    peer socket are only counted or cut off, never fatal."""
    with tempfile.TemporaryDirectory(prefix="cmr-", dir="/tmp") as name, trio.fail_after(60):
        root = Path(name)
        sockets = paths(root)
        machines = {n: KeyValueMachine() for n in VOTERS}
        nodes: dict[int, RaftNode] = {}
        transports: dict[int, MembraneTransport] = {}
        scopes: dict[int, trio.CancelScope] = {}

        async def run(node_id: int, task_status: trio.TaskStatus[RaftNode]) -> None:
            with trio.CancelScope() as scope:
                scopes[node_id] = scope
                async with (
                    endpoint(node_id, sockets) as transport,
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
            # A hostile peer: raw garbage bytes on the socket, then a bad packet.
            for junk in (b"\x00\x00\x00\x05hello", b"\xff\xff\xff\xff", b"\x00\x00\x10"):
                stream = await trio.open_unix_socket(str(sockets[leader.id]))
                await stream.send_all(junk)
                await stream.aclose()
            async with Synapse.grow("raft", socket_path=sockets[leader.id]) as syn:
                await syn.signal(Packet(b"\xff not a raft message"))
            while transports[leader.id].stats.malformed == 0:
                await trio.sleep(0.01)  # the signal is on its way
            async with trio.open_nursery() as clients:
                for i in range(20):
                    clients.start_soon(leader.propose, b"k%d=%d" % (i, i))
            for node in nodes.values():
                assert await node.read(b"k19") == b"19"

            # Stop a follower, write more, restart it: it catches up.
            follower = next(n for n in VOTERS if n != leader.id)
            scopes[follower].cancel()
            for i in range(20, 30):
                await leader.propose(b"k%d=%d" % (i, i))
            machines[follower] = KeyValueMachine()
            nodes[follower] = await nursery.start(run, follower)
            await nodes[follower].wait_leader()
            assert await nodes[follower].read(b"k29") == b"29"
            assert machines[follower].data[b"k29"] == b"29"
            nursery.cancel_scope.cancel()


async def test_membrane_transport_delivers_a_burst_in_order_and_reconnects() -> None:
    """Best-effort links (section 5.3 tolerates loss): a burst arrives complete and in
    order; after the peer restarts, the sender reconnects (dropping what it could not
    deliver); a peer added later is reached, a removed one is not."""
    with tempfile.TemporaryDirectory(prefix="cmr-", dir="/tmp") as name, trio.fail_after(30):
        sockets = paths(Path(name))

        def heartbeat(seq: int, dst: int = 2) -> Message:
            return Message(type=MessageType.HEARTBEAT, src=1, dst=dst, term=1, read_seq=seq)

        async with endpoint(1, {1: sockets[1], 2: sockets[2]}) as one:
            async with endpoint(2, sockets) as two:
                for seq in range(QUEUE_SIZE):
                    one.send(heartbeat(seq))
                got = [(await two.receive()).read_seq for _ in range(QUEUE_SIZE)]
                assert got == list(range(QUEUE_SIZE))
            async with endpoint(2, sockets) as two:
                received = None
                seq = QUEUE_SIZE
                while received is None:
                    one.send(heartbeat(seq))
                    seq += 1
                    with trio.move_on_after(0.02):
                        received = await two.receive()
                assert received.read_seq >= QUEUE_SIZE
            one.send(heartbeat(0, dst=3))
            assert one.stats.dropped_unreachable == 1  # no path for 3 yet
            async with endpoint(3, sockets) as three:
                one.add_peer(3, sockets[3])
                one.send(heartbeat(7, dst=3))
                assert (await three.receive()).read_seq == 7
                one.remove_peer(3)
                before = one.stats.dropped_unreachable
                one.send(heartbeat(8, dst=3))
                assert one.stats.dropped_unreachable == before + 1


async def test_node_memory_network_rules() -> None:
    """The in-memory network: FIFO inboxes, cuts, crashes, pause/resume in order."""
    net = MemoryNetwork()
    a, b = net.transport(1), net.transport(2)

    def msg(src: int, dst: int, term: int) -> Message:
        return Message(type=MessageType.HEARTBEAT, src=src, dst=dst, term=term)

    a.send(msg(1, 2, 1))
    net.pause()
    a.send(msg(1, 2, 2))
    a.send(msg(1, 2, 3))
    b.send(msg(2, 1, 9))  # held while paused
    net.cut(1, 2)
    net.resume()  # the rules in force at delivery apply: the cut loses all three
    assert net.dropped == 3
    net.heal()
    a.send(msg(1, 2, 2))
    a.send(msg(1, 2, 3))
    b.send(msg(2, 1, 9))
    assert [(await b.receive()).term for _ in range(3)] == [1, 2, 3]
    net.crash(2)
    a.send(msg(1, 2, 4))
    assert net.dropped == 4
    b2 = net.transport(2)  # restart: a fresh, empty inbox
    a.send(msg(1, 2, 5))
    assert (await b2.receive()).term == 5
    assert (await a.receive()).term == 9

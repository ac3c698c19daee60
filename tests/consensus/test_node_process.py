"""A real 3-process Raft cluster over Unix sockets; the leader is killed with SIGKILL.

Sections 5.2 and 5.4 end to end: after ``kill -9`` of the leader a new one
is elected, no acknowledged write is lost, and the killed node restarts
from its write-ahead log and catches up.
"""

from __future__ import annotations

import pytest
import trio

from cellmesh.consensus.errors import NotLeader
from cellmesh.consensus.serve import open_raft_client
from cellmesh.testing.cluster import find_leader, process_cluster

VOTERS = (1, 2, 3)


@pytest.mark.slow
async def test_node_process_cluster_survives_kill_9_of_the_leader() -> None:
    with process_cluster(VOTERS, tick=0.02) as ps, trio.fail_after(60):
        for node in VOTERS:
            await ps.wait_serving(node)
        async with (
            open_raft_client(ps.client_path(1)) as c1,
            open_raft_client(ps.client_path(2)) as c2,
            open_raft_client(ps.client_path(3)) as c3,
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
        await ps.wait_serving(leader)
        async with open_raft_client(ps.client_path(leader)) as restarted:
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

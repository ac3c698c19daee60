"""Real nodes with lost state: refused at start; wiped and rejoined from their peers.

Raft paper Figure 2: ``currentTerm``, ``votedFor`` and ``log[]`` are persistent
state, updated on stable storage before responding to RPCs. A node that lost
them must not simply start over as a fresh voter. Dissertation 4.2.1: a server
that joins (here: rejoins, empty) catches up as a learner before it votes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from cellmesh.consensus import Role, WalStateLost, wipe_replica
from cellmesh.consensus.wal import iter_segment_paths

from .conftest import IDS, TICK, cluster


async def test_node_refuses_to_start_after_its_log_was_truncated_to_zero_figure_2(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Figure 2: a node whose WAL was emptied must not restart at term 0 with no vote."""
    async with cluster(tmp_path) as c:
        leader = await c.leader()
        await leader.propose(b"a=1")
        victim = next(n for n in IDS if n != leader.id)
        await c.crash(victim)
        (segment,) = iter_segment_paths(c.directory(victim))
        segment.write_bytes(b"")
        with pytest.raises(WalStateLost) as info:
            await c.start(victim)
        assert info.value.path == segment
        assert await leader.propose(b"a=2") == b"1"  # the other two keep serving


async def test_node_wiped_replica_rejoins_as_learner_and_votes_once_promoted_4_2_1(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The documented operator path: remove the replica, wipe it, start it, add it.
    It comes back empty, catches up as a learner, is promoted, and then counts as a
    voter again: with the leader killed, it is one of the two votes that elect the
    next leader."""
    async with cluster(tmp_path) as c:
        leader = await c.leader()
        for i in range(20):
            await leader.propose(b"k%d=%d" % (i, i))
        victim = next(n for n in IDS if n != leader.id)
        await c.crash(victim)
        await leader.remove_server(victim)
        report = wipe_replica(c.directory(victim))
        assert report.node == victim and report.removed
        node = await c.start(victim)
        assert node.status().joining and node.status().last_index == 0
        await leader.add_server(victim)
        status = leader.status()
        assert victim in status.voters and status.config_committed
        await node.wait_applied(status.commit)
        assert c.machines[victim].data == c.machines[leader.id].data
        assert not node.status().joining
        await c.crash(victim)  # its promotion is durable: it restarts as a member
        node = await c.start(victim)
        assert not node.status().joining
        # It votes again: kill the leader; the other two must elect one of them.
        await c.crash(leader.id)
        survivors = [n for n in c.nodes.values()]
        while not any(n.status().role is Role.LEADER for n in survivors):
            await trio.sleep(TICK)
        new = next(n for n in survivors if n.status().role is Role.LEADER)
        assert await new.propose(b"after=1") == b""
        await node.wait_applied(new.status().commit)
        assert c.machines[victim].data[b"after"] == b"1"


async def test_node_wiped_replica_that_is_still_a_voter_never_votes(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Figure 2 / section 5.4: a replica wiped without first being removed has
    forgotten its votes and the entries it acknowledged. It catches up but stays
    joining and never votes: with the leader down, the remaining follower cannot
    be elected through it (which could lose committed entries); once the leader
    is back, the cluster serves again."""
    async with cluster(tmp_path) as c:
        leader = await c.leader()
        for i in range(5):
            await leader.propose(b"k%d=%d" % (i, i))
        victim = next(n for n in IDS if n != leader.id)
        await c.crash(victim)
        wipe_replica(c.directory(victim))
        node = await c.start(victim)
        await node.wait_applied(leader.status().commit)
        assert node.status().joining
        old_leader = leader.id
        await c.crash(old_leader)
        await trio.sleep(40 * 10 * TICK)  # 40 election timeouts of virtual time
        assert all(n.status().role is not Role.LEADER for n in c.nodes.values())
        assert node.status().joining
        await c.start(old_leader)
        leader = await c.leader()
        assert leader.id != victim
        assert await leader.propose(b"k9=9") == b""

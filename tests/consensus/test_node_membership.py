"""Membership changes through the Trio driver: add_server, remove_server, status.

Sections cited are from Ongaro's dissertation: 4.1 (single-server changes, one
at a time), 4.2.1 (catching up new servers), 4.2.2 (removing the leader),
4.2.3 (disruptive servers).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from cellmesh.consensus import (
    CatchUpFailed,
    ConfigChangeInProgress,
    EntryKind,
    Membership,
    NodeOptions,
    NodeRemoved,
    ProposalDropped,
    Role,
    WalBatch,
)
from cellmesh.consensus.node import open_wal_storage

from .conftest import TICK, Recorder, cluster


def configurations(recorder: Recorder, node: int) -> list[Membership]:
    """The CONFIG entries ``node`` saved, in order (the last save of an index wins)."""
    by_index: dict[int, Membership] = {}
    for who, kind, item in recorder.events:
        if who == node and kind == "saved" and isinstance(item, WalBatch):
            for entry in item.entries:
                by_index.pop(entry.index, None)
                if entry.kind is EntryKind.CONFIG:
                    by_index[entry.index] = Membership.decode(entry.data)
    return [by_index[i] for i in sorted(by_index)]


async def test_node_add_server_joins_as_learner_then_is_promoted_4_2_1(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """4.2.1: a new server is added as a learner, caught up, then promoted by a second
    single-server change; the status shows the configuration at every step."""
    recorder = Recorder()
    async with cluster(tmp_path, open_storage=recorder.storage(open_wal_storage)) as c:
        leader = await c.leader()
        for i in range(30):
            await leader.propose(b"k%d=%d" % (i, i))
        status = leader.status()
        assert status.voters == {1, 2, 3} and status.learners == frozenset()
        assert status.config_index == 0 and status.config_committed
        newcomer = await c.start(4)
        await leader.add_server(4)
        status = leader.status()
        assert status.voters == {1, 2, 3, 4} and status.config_committed
        assert status.pending_change is None
        configs = configurations(recorder, leader.id)
        assert configs[-2:] == [
            Membership(voters=frozenset({1, 2, 3}), learners=frozenset({4})),
            Membership(voters=frozenset({1, 2, 3, 4})),
        ]
        await newcomer.wait_applied(status.commit)
        assert c.machines[4].data == c.machines[leader.id].data
        assert newcomer.status().voters == {1, 2, 3, 4}
        await leader.add_server(4)  # already a voter: nothing to do
        assert configurations(recorder, leader.id) == configs


async def test_node_refuses_a_second_concurrent_change_4_1(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """4.1: one change at a time. While a learner catches up, another add_server or
    remove_server is refused with ConfigChangeInProgress naming the change under way,
    which the status shows too."""
    options = NodeOptions(tick_interval=TICK, catch_up_stall_elections=1000)
    async with cluster(tmp_path, options=options) as c:
        leader = await c.leader()
        await leader.propose(b"a=1")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(leader.add_server, 4)  # node 4 is not running: it never catches up
            while leader.status().pending_change is None or 4 not in leader.status().learners:
                await trio.sleep(TICK)
            pending = leader.status().pending_change
            assert pending is not None and pending.kind == "add" and pending.node == 4
            assert pending.phase.startswith("catching up")
            follower = next(n for n in (1, 2, 3) if n != leader.id)
            with pytest.raises(ConfigChangeInProgress) as info:
                await leader.remove_server(follower)
            assert info.value.pending is not None and info.value.pending.node == 4
            assert "add node 4" in str(info.value)
            with pytest.raises(ConfigChangeInProgress):
                await leader.add_server(5)
            nursery.cancel_scope.cancel()
        assert leader.status().pending_change is None
        assert leader.status().learners == {4}  # the learner stays until removed
        await leader.remove_server(4)
        assert leader.status().learners == frozenset()


async def test_node_add_server_fails_when_the_learner_makes_no_progress_4_2_1(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """4.2.1: a learner that does not catch up is not promoted: CatchUpFailed, and it
    stays a learner (the voters, and so the quorum, are unchanged)."""
    options = NodeOptions(tick_interval=TICK, catch_up_stall_elections=2)
    async with cluster(tmp_path, options=options) as c:
        leader = await c.leader()
        await leader.propose(b"a=1")
        with pytest.raises(CatchUpFailed) as info:
            await leader.add_server(4)
        assert info.value.node == 4 and "no progress" in info.value.problem
        status = leader.status()
        assert status.voters == {1, 2, 3} and status.learners == {4}
        assert status.pending_change is None
        assert await leader.propose(b"a=2") == b"1"  # the cluster keeps committing


async def test_node_remove_server_and_the_removed_node_reports_it_4_2_3(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """4.1 / 4.2.3: the removed server learns of its removal: its status says
    REMOVED and its callers get NodeRemoved (it does not linger as a candidate)."""
    async with cluster(tmp_path) as c:
        leader = await c.leader()
        await leader.propose(b"a=1")
        victim = next(n for n in c.nodes.values() if n is not leader)
        await leader.remove_server(victim.id)
        while victim.status().role is not Role.REMOVED:
            await trio.sleep(TICK)
        status = victim.status()
        assert status.voters == {1, 2, 3} - {victim.id} and status.config_committed
        with pytest.raises(NodeRemoved) as info:
            await victim.propose(b"a=2")
        assert info.value.leader_hint == leader.id
        with pytest.raises(NodeRemoved):
            await victim.read(b"a")
        term = victim.status().term
        await trio.sleep(50 * TICK * 10)  # many election timeouts of virtual time
        assert victim.status().role is Role.REMOVED and victim.status().term == term
        assert await leader.propose(b"a=3") == b"1"


async def test_node_leader_removes_itself_and_hands_over_4_2_2(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """4.2.2: remove_server on the leader's own id returns once the change is applied;
    the leader then hands over and knows it was removed."""
    async with cluster(tmp_path) as c:
        leader = await c.leader()
        await leader.propose(b"a=1")
        await leader.remove_server(leader.id)
        while leader.status().role is not Role.REMOVED:
            await trio.sleep(TICK)
        others = [n for n in c.nodes.values() if n is not leader]
        while (new := others[0].status().leader) in (None, leader.id):
            await trio.sleep(TICK)
        assert await c.nodes[new].propose(b"a=2") == b"1"


async def test_node_proposals_during_a_transfer_are_dropped_3_10(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Dissertation 3.10: while leadership moves, the leader refuses proposals before
    appending anything: ProposalDropped, the definitely-not-applied outcome."""
    async with cluster(tmp_path) as c:
        leader = await c.leader()
        await leader.propose(b"a=1")
        target = next(n for n in (1, 2, 3) if n != leader.id)
        c.network.isolate(target)  # the transfer cannot complete at once
        leader.transfer_leadership(target)
        with pytest.raises(ProposalDropped) as info:
            await leader.propose(b"a=2")
        assert "moving to node" in info.value.reason
        c.network.heal()

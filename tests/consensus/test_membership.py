"""Membership changes around the edges: removed servers learn of it, joining servers wait.

Sections cited are from Ongaro's dissertation ("Consensus: Bridging Theory and
Practice", 2014): 4.1 (single-server changes), 4.2.2 (removing the leader),
4.2.3 (disruptive servers).
"""

from __future__ import annotations

import pytest

from cellmesh.consensus import (
    JoinState,
    Membership,
    Message,
    MessageType,
    NodeRemoved,
    NotLeader,
    Role,
)
from cellmesh.testing.raftnet import RaftNet, drain, make_core

MT = MessageType
IDS = [1, 2, 3]


def cluster(n: int = 3, *, pre_vote: bool = True, check_quorum: bool = True) -> RaftNet:
    ids = list(range(1, n + 1))
    net = RaftNet.from_cores(
        make_core(i, ids, pre_vote=pre_vote, check_quorum=check_quorum) for i in ids
    )
    net.campaign(1)
    assert net.leader() == 1
    return net


def settle(net: RaftNet, node: int) -> None:
    """Tick long enough for the leader's removal grace period to run out."""
    net.tick(3 * net.nodes[node].config.election_tick)


def tick_until_removed(net: RaftNet, node: int, elections: int) -> None:
    """Tick ``node`` alone (delivering) until it knows it was removed, or give up."""
    core = net.nodes[node]
    for _ in range(elections * core.config.election_tick):
        core.tick()
        net.deliver()
        if core.role is Role.REMOVED:
            return


def test_removed_voter_learns_it_was_removed_and_stops_4_1() -> None:
    """4.1 / 4.2.3: the leader keeps replicating to a server it removed until the
    removal commits, so the server learns it; it then never campaigns and answers
    requests with NodeRemoved (not a bare NotLeader(None))."""
    net = cluster()
    net.nodes[1].propose(b"before")
    net.nodes[1].propose_membership(Membership(voters=frozenset({1, 2})))
    net.tick(2)
    removed = net.nodes[3]
    assert removed.role is Role.REMOVED
    with pytest.raises(NodeRemoved) as info:
        removed.propose(b"x")
    assert isinstance(info.value, NotLeader) and info.value.leader_hint == 1
    with pytest.raises(NodeRemoved):
        removed.read_index(b"r")
    term = removed.term
    for _ in range(10 * removed.config.election_tick):
        removed.tick()
        net.deliver()
    assert removed.role is Role.REMOVED and removed.term == term  # never campaigned
    assert net.leader() == 1


def test_removed_server_that_missed_its_removal_learns_from_the_leader_4_2_3() -> None:
    """4.2.3: a removed server that was down while it was removed campaigns with its
    stale configuration; the leader answers its pre-vote by replicating to it, and
    it learns of the removal instead of lingering as a pre-candidate."""
    net = cluster()
    net.down.add(3)
    net.nodes[1].propose_membership(Membership(voters=frozenset({1, 2})))
    net.tick(2)
    settle(net, 1)
    assert net.nodes[1].progress(3) is None  # the grace period ran out while it was down
    net.down.discard(3)
    stale = net.nodes[3]
    assert stale.membership.voters == {1, 2, 3}
    tick_until_removed(net, 3, elections=4)
    assert stale.role is Role.REMOVED
    assert stale.membership.voters == {1, 2}
    assert net.leader() == 1 and net.nodes[1].term == net.nodes[2].term


def test_removed_server_finds_a_leader_outside_its_stale_configuration_4_2_3() -> None:
    """4.2.3: when no member of its stale configuration leads any more, members that
    know of its removal reject its pre-votes naming their leader, and it asks that
    leader next."""
    net = cluster()
    net.down.add(3)
    leader = net.nodes[1]
    leader.propose_membership(Membership(voters=frozenset({1, 2})))
    net.tick(2)
    net.nodes[4] = make_core(4, IDS, pre_vote=True, check_quorum=True)
    net.storage[4] = type(net.storage[1])()
    leader.propose_membership(Membership(voters=frozenset({1, 2, 4})))
    net.tick(2)
    leader.transfer_leadership(4)
    net.deliver()
    assert net.leader() == 4
    net.tick(2)
    net.nodes[4].propose_membership(Membership(voters=frozenset({2, 4})))
    net.tick(2)
    settle(net, 4)
    assert net.nodes[1].role is Role.REMOVED
    net.down.add(1)
    net.down.discard(3)
    stale = net.nodes[3]
    tick_until_removed(net, 3, elections=6)
    assert stale.role is Role.REMOVED
    assert stale.membership.voters == {2, 4}


def test_a_member_that_knows_no_leader_points_an_outsider_at_a_voter_4_2_3() -> None:
    """A server outside the configuration may only reach servers that know no leader
    (removed ones, say): their rejection names a voter of their configuration, so
    its next request moves towards the cluster (harsh seed 1618 hung without it)."""
    lone = make_core(2, [3, 4], term=1, log_terms=[1, 1], pre_vote=True, check_quorum=True)
    assert lone.lead is None
    lone.step(Message(type=MT.PRE_VOTE, src=7, dst=2, term=2, index=0, log_term=0))
    (reply,) = drain(lone)
    assert reply.type is MT.PRE_VOTE_RESP and reply.reject and reply.reject_hint == 3


def test_removed_learner_that_missed_its_removal_learns_it() -> None:
    """A learner never campaigns; one that hears no leader for an election timeout
    asks the voters (a pre-vote it never acts on), and the leader replicates to it."""
    cores = [make_core(i, IDS, learners=[4], pre_vote=True, check_quorum=True) for i in IDS]
    net = RaftNet.from_cores([*cores, make_core(4, IDS, learners=[4], pre_vote=True)])
    net.campaign(1)
    net.down.add(4)
    net.nodes[1].propose_membership(Membership(voters=frozenset(IDS)))
    net.tick(2)
    settle(net, 1)
    net.down.discard(4)
    learner = net.nodes[4]
    tick_until_removed(net, 4, elections=4)
    assert learner.role is Role.REMOVED


def test_vote_request_flood_from_unknown_ids_keeps_the_leader_bounded_4_2_3() -> None:
    """Attack: vote requests from a thousand ids outside the cluster. The leader answers
    outsiders by replicating to them, but tracks at most a fixed number, and its
    term, leadership and commit are unaffected."""
    net = cluster()
    leader = net.nodes[1]
    leader.propose(b"x")
    net.deliver()
    term = leader.term
    for fake in range(100, 1100):
        leader.step(
            Message(type=MT.PRE_VOTE, src=fake, dst=1, term=term + 1, index=999, log_term=term)
        )
    net.deliver()  # the appends to the outsiders are lost: no such nodes
    tracked = [n for n in range(100, 1100) if leader.progress(n) is not None]
    assert 0 < len(tracked) <= 16
    assert leader.role is Role.LEADER and leader.term == term
    leader.propose(b"y")
    net.tick(2)
    assert net.applied_data(2)[-1] == b"y"


def test_new_server_outside_the_bootstrap_waits_and_is_not_removed_4_1() -> None:
    """4.1: a new server starts with the bootstrap configuration, which does not name
    it: it is not a member yet (it waits to be added), not a removed one."""
    fresh = make_core(4, IDS)
    assert fresh.role is Role.FOLLOWER
    for _ in range(5 * fresh.config.election_tick):
        fresh.tick()
    assert fresh.role is Role.FOLLOWER and fresh.term == 0


def test_removed_server_added_back_becomes_a_follower_again_4_1() -> None:
    """4.1: a removed server keeps accepting the log from a leader; a configuration
    that adds it back makes it a member again (its state is intact)."""
    net = cluster()
    net.nodes[1].propose_membership(Membership(voters=frozenset({1, 2})))
    net.tick(2)
    assert net.nodes[3].role is Role.REMOVED
    net.nodes[1].propose_membership(Membership(voters=frozenset({1, 2}), learners=frozenset({3})))
    net.tick(2)
    assert net.nodes[3].role is Role.FOLLOWER
    assert net.nodes[3].membership.learners == {3}


# -- joining nodes -------------------------------------------------------------------------


def rejoin(net: RaftNet, node: int) -> None:
    """Replace ``node`` by an empty joining node (its state was wiped)."""
    net.nodes[node] = make_core(node, IDS, pre_vote=True, check_quorum=True, join=JoinState())
    net.storage[node] = type(net.storage[1])()


def test_joining_node_ignores_the_bootstrap_and_never_votes_until_promoted_4_1() -> None:
    """A joining node (started empty to join a running cluster) takes no bootstrap
    configuration, does not campaign and refuses votes until promoted."""
    net = cluster()
    net.nodes[1].propose(b"x")
    net.tick(2)
    rejoin(net, 3)
    wiped = net.nodes[3]
    assert wiped.joining and wiped.membership.voters == frozenset()
    net.tick(2)
    assert wiped.log.last_index == net.nodes[1].log.last_index  # caught up
    assert wiped.join is not None and wiped.join.floor is not None
    assert wiped.joining  # still a voter from before the wipe: not re-admitted
    for _ in range(5 * wiped.config.election_tick):
        wiped.tick()
    assert wiped.role is Role.FOLLOWER and wiped.term == net.nodes[1].term


def test_joining_node_votes_only_after_a_change_made_after_it_joined_4_1() -> None:
    """The documented path for a wiped replica: remove it, let it rejoin empty, add it
    as a learner, promote it. Only that promotion (appended after it joined) lets it
    vote again; an older promotion in the history it replays does not."""
    ids = [1, 2, 3]
    net = RaftNet.from_cores(make_core(i, ids, pre_vote=True, check_quorum=True) for i in ids)
    net.campaign(1)
    leader = net.nodes[1]
    # History the joining node will replay: 3 was demoted to learner and promoted.
    for m in (
        Membership(voters=frozenset({1, 2}), learners=frozenset({3})),
        Membership(voters=frozenset({1, 2, 3})),
        Membership(voters=frozenset({1, 2})),  # the operator removes 3, then wipes it
    ):
        leader.propose_membership(m)
        net.tick(2)
    rejoin(net, 3)
    wiped = net.nodes[3]
    net.tick(2)
    assert wiped.joining  # replaying the old promotion did not re-admit it
    assert wiped.role is Role.FOLLOWER  # not REMOVED either: it is joining
    leader.propose_membership(Membership(voters=frozenset({1, 2}), learners=frozenset({3})))
    net.tick(2)
    assert wiped.joining
    leader.propose_membership(Membership(voters=frozenset({1, 2, 3})))
    net.tick(2)
    assert not wiped.joining
    assert wiped.join == JoinState(floor=wiped.join.floor, done=True)
    assert wiped.vote == 1 and wiped.term == leader.term  # counts as its vote this term
    # It is an ordinary voter now: it can win an election.
    leader.transfer_leadership(3)
    net.deliver()
    assert net.leader() == 3

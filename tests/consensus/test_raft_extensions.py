"""Tests of the features beyond the paper's core: the dissertation's extensions.

Sections cited are from Ongaro's dissertation ("Consensus: Bridging Theory
and Practice", 2014) unless marked as the paper (Ongaro & Ousterhout 2014).
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from cellmesh.consensus import (
    ConfigChangeInProgress,
    ConsensusUsageError,
    EntryKind,
    InvalidConfigChange,
    Membership,
    Message,
    MessageType,
    NotLeader,
    ProposalDropped,
    ReadState,
    Role,
)
from cellmesh.consensus.core import RaftCore
from cellmesh.consensus.types import Entry, Snapshot, SnapshotMeta
from cellmesh.testing.raftnet import RaftNet, drain, make_core

MT = MessageType


def cluster(n: int = 3, **kw: object) -> RaftNet:
    ids = list(range(1, n + 1))
    net = RaftNet.from_cores(make_core(i, ids, **kw) for i in ids)  # type: ignore[arg-type]
    net.campaign(1)
    assert net.leader() == 1
    return net


def isolate(node: int) -> Callable[[Message], bool]:
    return lambda m: node in (m.src, m.dst)


# -- ReadIndex (dissertation 6.4) ----------------------------------------------------------


def test_read_index_waits_for_a_heartbeat_quorum_6_4() -> None:
    """6.4: the leader records its commit index, then confirms leadership by heartbeats."""
    net = cluster()
    net.nodes[1].propose(b"a")
    net.deliver()
    leader = net.nodes[1]
    leader.read_index(b"r1")
    hb = net.take(lambda m: m.type is MT.HEARTBEAT)
    assert sorted(m.dst for m in hb) == [2, 3]
    assert net.storage[1].read_states == []  # not before a quorum answered
    net.nodes[2].step(hb[0] if hb[0].dst == 2 else hb[1])
    net.deliver()
    assert net.storage[1].read_states == [ReadState(index=leader.log.committed, context=b"r1")]


def test_read_index_on_partitioned_leader_never_completes_6_4() -> None:
    """6.4: a deposed leader that cannot reach a majority must not serve reads."""
    net = cluster()
    net.nodes[1].read_index(b"r")
    net.deliver(drop=isolate(1))
    assert net.storage[1].read_states == []


def test_read_index_waits_for_an_entry_of_the_leaders_term_6_4() -> None:
    """6.4 step 1: until its no-op commits, a new leader does not know the commit index."""
    leader = make_core(1, [1, 2, 3], term=1, log_terms=[1], commit=1)
    for _ in range(20):
        leader.tick()
        if leader.role is not Role.FOLLOWER:
            break
    campaign_msgs = drain(leader)
    assert campaign_msgs
    leader.step(Message(type=MT.VOTE_RESP, src=2, dst=1, term=2))
    drain(leader)
    assert leader.role is Role.LEADER and leader.log.committed == 1
    leader.read_index(b"early")
    leader.tick()
    rd = leader.ready()
    assert rd.read_states == ()
    assert {m.read_seq for m in rd.messages if m.type is MT.HEARTBEAT} == {0}
    leader.advance(rd)
    leader.step(Message(type=MT.APPEND_RESP, src=2, dst=1, term=2, index=2))  # no-op commits
    assert leader.log.committed == 2
    hb = [m for m in drain(leader) if m.type is MT.HEARTBEAT]
    assert hb and all(m.read_seq == 1 for m in hb)
    leader.step(Message(type=MT.HEARTBEAT_RESP, src=3, dst=1, term=2, read_seq=1))
    rd = leader.ready()
    assert rd.read_states == (ReadState(index=2, context=b"early"),)


def test_read_index_from_follower_is_forwarded_to_leader_6_4() -> None:
    net = cluster()
    net.nodes[1].propose(b"a")
    net.deliver()
    net.nodes[3].read_index(b"f")
    net.deliver()
    assert net.storage[3].read_states == [ReadState(index=net.nodes[1].log.committed, context=b"f")]


def test_read_index_on_single_node_is_immediate_6_4() -> None:
    net = RaftNet.from_cores([make_core(1, [1])])
    net.campaign(1)
    net.nodes[1].read_index(b"x")
    net.flush()
    assert net.storage[1].read_states == [ReadState(index=1, context=b"x")]


def test_read_index_without_known_leader_raises_not_leader_6_4() -> None:
    with pytest.raises(NotLeader):
        make_core(1, [1, 2, 3]).read_index(b"x")


# -- leadership transfer (dissertation 3.10) -----------------------------------------------


def test_leadership_transfer_to_up_to_date_follower_3_10() -> None:
    """3.10: the leader sends TimeoutNow; the target wins at once with a higher term."""
    net = cluster()
    term = net.nodes[1].term
    net.nodes[1].transfer_leadership(2)
    net.deliver()
    assert net.leader() == 2
    assert net.nodes[2].term == term + 1
    assert net.nodes[1].role is Role.FOLLOWER


def test_leadership_transfer_catches_up_lagging_target_first_3_10() -> None:
    """3.10: the leader first brings the target's log up to date, then sends TimeoutNow."""
    net = cluster()
    for i in range(5):
        net.nodes[1].propose(b"%d" % i)
    net.deliver(drop=isolate(3))
    assert net.nodes[3].log.last_index < net.nodes[1].log.last_index
    net.nodes[1].transfer_leadership(3)
    sent = net.take()
    assert MT.TIMEOUT_NOW not in [m.type for m in sent]  # not before it caught up
    net.queue.extend(sent)
    net.tick(2)
    assert net.leader() == 3
    assert net.nodes[3].log.last_index == net.nodes[1].log.last_index


def test_proposals_are_dropped_during_transfer_and_transfer_times_out_3_10() -> None:
    """3.10: proposals stop during a transfer; an unfinished transfer is abandoned."""
    net = cluster(election_tick=10)
    net.nodes[1].transfer_leadership(2)
    with pytest.raises(ProposalDropped):
        net.nodes[1].propose(b"x")
    net.deliver(drop=isolate(2))
    for _ in range(10):
        net.nodes[1].tick()
        net.deliver(drop=lambda m: m.dst == 2 or (m.src == 2 and m.type is not MT.APPEND_RESP))
    assert net.nodes[1].role is Role.LEADER
    assert net.nodes[1].lead_transferee is None
    net.nodes[1].propose(b"x")


def test_transfer_vote_bypasses_the_leader_lease_3_10() -> None:
    """3.10 + 4.2.3: a vote request caused by TimeoutNow is not ignored by followers."""
    net = cluster(check_quorum=True)
    net.nodes[1].transfer_leadership(3)
    net.deliver()
    assert net.leader() == 3


# -- pre-vote (dissertation 9.6) and check-quorum (6.2) ------------------------------------


def test_pre_vote_keeps_an_isolated_node_from_raising_its_term_9_6() -> None:
    """9.6: a partitioned node's pre-vote fails, so its term stays and it cannot disrupt."""
    net = cluster(pre_vote=True, check_quorum=True)
    term = net.nodes[1].term
    for _ in range(100):
        for n in (1, 2, 3):
            net.nodes[n].tick()
        net.deliver(drop=isolate(3))
    assert net.nodes[3].term == term
    assert net.nodes[3].role is Role.PRE_CANDIDATE
    net.tick(5)  # rejoin
    assert net.leader() == 1
    assert net.nodes[1].term == term


def test_without_pre_vote_a_rejoining_node_disrupts_the_leader_9_6() -> None:
    """The problem 9.6 solves: without pre-vote the isolated node's term grows."""
    net = cluster(pre_vote=False, check_quorum=False)
    term = net.nodes[1].term
    for _ in range(100):
        for n in (1, 2, 3):
            net.nodes[n].tick()
        net.deliver(drop=isolate(3))
    assert net.nodes[3].term > term + 1
    net.tick(1)
    assert net.nodes[1].term > term  # the leader had to step down


def test_pre_vote_is_granted_without_changing_the_voters_term_9_6() -> None:
    voter = make_core(2, [1, 2, 3], term=5, log_terms=[1], pre_vote=True)
    voter.step(Message(type=MT.PRE_VOTE, src=1, dst=2, term=6, index=1, log_term=1))
    (resp,) = drain(voter)
    assert (resp.type, resp.reject, resp.term) == (MT.PRE_VOTE_RESP, False, 6)
    assert (voter.term, voter.vote) == (5, None)
    voter.step(Message(type=MT.PRE_VOTE, src=3, dst=2, term=6, index=0, log_term=0))
    (resp,) = drain(voter)
    assert resp.reject  # a stale log is refused as in a real vote (paper 5.4.1)


def test_check_quorum_leader_steps_down_when_cut_off_6_2() -> None:
    """6.2: a leader that has not heard from a majority for an election timeout steps down."""
    net = cluster(check_quorum=True, election_tick=10)
    for _ in range(25):
        net.nodes[1].tick()
        net.deliver(drop=isolate(1))
    assert net.nodes[1].role is Role.FOLLOWER


def test_check_quorum_leader_stays_while_majority_answers_6_2() -> None:
    net = cluster(check_quorum=True, election_tick=10)
    for _ in range(40):
        net.nodes[1].tick()
        net.deliver(drop=isolate(3))
    assert net.nodes[1].role is Role.LEADER


def test_lease_follower_ignores_vote_requests_while_leader_is_live_4_2_3() -> None:
    """4.2.3: a server that heard from a leader within the minimum timeout ignores RequestVote."""
    net = cluster(check_quorum=True)
    follower = net.nodes[2]
    term = follower.term
    follower.step(Message(type=MT.VOTE, src=3, dst=2, term=term + 1, index=99, log_term=99))
    assert follower.term == term
    assert not net.take(lambda m: m.src == 2)


# -- snapshots and InstallSnapshot (paper section 7) -----------------------------------------


def test_compaction_and_install_snapshot_catch_up_a_lagging_follower_section_7() -> None:
    """Section 7: the leader sends its snapshot to a follower whose next entry is compacted."""
    net = cluster()
    for i in range(6):
        net.nodes[1].propose(b"%d" % i)
    net.deliver(drop=isolate(3))
    leader = net.nodes[1]
    applied = leader.log.applied
    snap = leader.compact(applied, b"state@%d" % applied)
    assert leader.log.first_index == applied + 1
    assert snap.meta.voters == frozenset({1, 2, 3})
    leader.propose(b"after")
    net.tick(3)
    f = net.nodes[3]
    assert f.log.snapshot.meta.index == applied
    assert f.log.snapshot.data == b"state@%d" % applied
    assert net.storage[3].snapshot == snap
    assert f.log.last_index == leader.log.last_index
    assert f.log.committed == leader.log.committed
    assert net.applied_data(3)[-1] == b"after"


def test_appends_to_a_lagging_follower_are_bounded_in_bytes() -> None:
    """Large entries reach a follower far behind in appends of at most
    ``max_bytes_per_message`` bytes of entry data (an entry larger than the
    limit still goes, alone), so it acknowledges them step by step."""
    net = cluster(max_bytes_per_message=1000)
    for size in (600, 600, 300, 300, 300, 5000, 10):
        net.nodes[1].propose(b"x" * size)
    net.deliver(drop=isolate(3))
    sizes: list[list[int]] = []

    def spy(m: Message) -> bool:  # records the appends to 3, drops nothing
        if m.type is MT.APPEND and m.dst == 3:
            sizes.append([len(e.data) for e in m.entries])
        return False

    for _ in range(30):
        for node in net.nodes.values():
            node.tick()
        net.deliver(drop=spy)
    assert net.nodes[3].log.last_index == net.nodes[1].log.last_index
    shipped = [s for s in sizes if s]
    assert all(len(s) == 1 or sum(s) <= 1000 for s in shipped), shipped
    assert [5000] in shipped  # larger than the limit: alone
    assert net.applied_data(3)[-1] == b"x" * 10


def test_log_entries_from_stops_at_the_byte_limit() -> None:
    core = make_core(1, [1], log_terms=[1, 1, 1, 1])
    log = core.log
    assert [e.index for e in log.entries_from(1, 10)] == [1, 2, 3, 4]
    assert [e.index for e in log.entries_from(1, 10, 1)] == [1]  # the first always goes
    assert [e.index for e in log.entries_from(2, 10, 2)] == [2, 3]  # 1 + 1 data bytes
    assert [e.index for e in log.entries_from(1, 2, 100)] == [1, 2]


def test_a_ready_hands_out_committed_entries_bounded_in_bytes() -> None:
    """Applying a long run of large committed entries is spread over Readies, so a
    node persists and acknowledges newer entries in between (one at least)."""
    late = make_core(2, [1, 2, 3], log_terms=[1] * 6, commit=6, max_committed_bytes_per_ready=2)
    batches = []
    while late.has_ready():
        rd = late.ready()
        batches.append([e.index for e in rd.committed_entries])
        late.advance(rd)
    assert [b for b in batches if b] == [[1, 2], [3, 4], [5, 6]]  # 1-byte data each
    one = make_core(2, [1, 2, 3], log_terms=[1] * 3, commit=3, max_committed_bytes_per_ready=1)
    rd = one.ready()
    assert [e.index for e in rd.committed_entries] == [1]


def test_install_snapshot_keeps_a_matching_log_suffix_section_7() -> None:
    """Section 7: if the follower already has the snapshot's last entry, it keeps what follows."""
    f = make_core(2, [1, 2], term=1, log_terms=[1, 1, 1, 1])
    snap_core = make_core(1, [1, 2], term=1, log_terms=[1, 1, 1, 1], commit=2)
    drain(snap_core)
    snap = snap_core.compact(2, b"s")
    f.step(Message(type=MT.SNAPSHOT, src=1, dst=2, term=1, snapshot=snap))
    (ack,) = drain(f)
    assert (ack.type, ack.index) == (MT.APPEND_RESP, 4)
    assert f.log.last_index == 4 and f.log.committed == 2


def test_compact_beyond_applied_is_a_usage_error_section_7() -> None:
    c = make_core(1, [1], log_terms=[1, 1])
    with pytest.raises(ConsensusUsageError):
        c.compact(2, b"")


def test_ready_must_be_advanced_before_the_next_one() -> None:
    """The Ready contract: one outstanding Ready at a time."""
    c = make_core(1, [1, 2, 3])
    for _ in range(20):
        c.tick()
    rd = c.ready()
    with pytest.raises(ConsensusUsageError):
        c.ready()
    c.advance(rd)
    with pytest.raises(ConsensusUsageError):
        c.advance(rd)


# -- membership changes (dissertation 4.1) and learners ----------------------------------------


def add_node(net: RaftNet, node: int, voters: list[int]) -> None:
    net.nodes[node] = make_core(node, voters)
    net.storage[node] = type(net.storage[1])()


def test_add_voter_takes_effect_on_append_and_counts_for_commit_4_1() -> None:
    """4.1: a single-server change is used as soon as it is appended, before it commits."""
    net = cluster()
    add_node(net, 4, [1, 2, 3])
    leader = net.nodes[1]
    idx = leader.propose_membership(Membership(voters=frozenset({1, 2, 3, 4})))
    assert leader.membership.voters == {1, 2, 3, 4}  # in effect before it commits
    assert leader.log.committed < idx
    net.deliver(drop=lambda m: m.dst in (3, 4) or m.src in (3, 4))
    assert leader.log.committed < idx  # 2 of 4 voters is no longer a majority
    net.tick(3)
    assert leader.log.committed >= idx
    assert net.nodes[4].membership.voters == {1, 2, 3, 4}
    assert net.nodes[4].log.last_index == leader.log.last_index


def test_only_one_membership_change_at_a_time_4_1() -> None:
    net = cluster()
    leader = net.nodes[1]
    leader.propose_membership(Membership(voters=frozenset({1, 2})))
    with pytest.raises(ConfigChangeInProgress):
        leader.propose_membership(Membership(voters=frozenset({1})))
    net.tick(2)
    leader.propose_membership(Membership(voters=frozenset({1})))


def test_membership_change_of_two_voters_is_refused_4_1() -> None:
    net = cluster()
    with pytest.raises(InvalidConfigChange):
        net.nodes[1].propose_membership(Membership(voters=frozenset({1, 2, 3, 4, 5})))
    with pytest.raises(InvalidConfigChange):
        net.nodes[1].propose_membership(
            Membership(voters=frozenset({1, 2}), learners=frozenset({2}))
        )
    with pytest.raises(InvalidConfigChange):
        net.nodes[1].propose_membership(Membership(voters=frozenset()))


@pytest.mark.parametrize("demote", [False, True])
def test_leader_removing_itself_leads_until_commit_then_hands_off_4_2_2(demote: bool) -> None:
    """4.2.2: the leader manages a configuration without itself, not counting its own
    vote, and steps down (handing off with TimeoutNow) once that configuration commits."""
    net = cluster()
    leader = net.nodes[1]
    learners = frozenset({1}) if demote else frozenset()
    idx = leader.propose_membership(Membership(voters=frozenset({2, 3}), learners=learners))
    net.deliver(drop=lambda m: 3 in (m.src, m.dst))
    assert leader.role is Role.LEADER
    assert leader.log.committed < idx  # leader + node 2 are not a majority of {2, 3}
    net.deliver()
    net.tick(2)
    assert leader.log.committed >= idx
    # A removed leader knows it is out (Role.REMOVED); a demoted one stays a follower.
    assert leader.role is (Role.FOLLOWER if demote else Role.REMOVED)
    new = net.leader()
    assert new in (2, 3)
    net.nodes[new].propose(b"after")
    net.tick(2)
    assert net.applied_data(new)[-1] == b"after"
    # The removed node is kept informed for a grace period, then forgotten; a learner
    # keeps following.
    net.tick(2 * net.nodes[new].config.election_tick + 1)
    net.nodes[new].propose(b"later")
    net.tick(2)
    assert (net.applied_data(1)[-1:] == [b"later"]) is demote


def test_new_leader_changes_membership_only_after_its_noop_commits_4_1() -> None:
    """4.1 (the 2015 fix): a leader must commit an entry of its term before a change."""
    net = RaftNet.from_cores(make_core(i, [1, 2, 3]) for i in (1, 2, 3))
    net.nodes[1].tick()
    for _ in range(20):
        net.nodes[1].tick()
        if net.nodes[1].role is not Role.FOLLOWER:
            break
    net.deliver(drop=lambda m: m.type is MT.APPEND)
    assert net.nodes[1].role is Role.LEADER
    with pytest.raises(ConfigChangeInProgress):
        net.nodes[1].propose_membership(Membership(voters=frozenset({1, 2})))
    net.tick(2)
    net.nodes[1].propose_membership(Membership(voters=frozenset({1, 2})))


def test_removed_voter_no_longer_counts_and_stops_receiving_4_1() -> None:
    net = cluster()
    leader = net.nodes[1]
    leader.propose_membership(Membership(voters=frozenset({1, 2})))
    net.tick(2)
    assert leader.membership.voters == {1, 2}
    # The leader keeps node 3 informed for a grace period, then stops replicating to it.
    net.tick(2 * leader.config.election_tick)
    assert leader.progress(3) is None
    leader.propose(b"x")
    net.deliver(drop=isolate(2))
    assert b"x" not in net.applied_data(1)  # 1 of {1, 2} is not a majority
    net.tick(2)
    assert net.applied_data(1)[-1] == b"x"  # 2 of {1, 2} is, without node 3


def test_follower_reverts_membership_when_config_entry_is_overwritten_4_1() -> None:
    """4.1: a log entry's configuration is used while present; truncation undoes it."""
    f = make_core(2, [1, 2, 3], term=1, log_terms=[1])
    cfg = Entry(
        index=2,
        term=1,
        kind=EntryKind.CONFIG,
        data=Membership(voters=frozenset({1, 2, 3, 4})).encode(),
    )
    f.step(Message(type=MT.APPEND, src=1, dst=2, term=1, index=1, log_term=1, entries=(cfg,)))
    assert f.membership.voters == {1, 2, 3, 4}
    f.step(
        Message(
            type=MT.APPEND,
            src=3,
            dst=2,
            term=2,
            index=1,
            log_term=1,
            entries=(Entry(index=2, term=2),),
        )
    )
    assert f.membership.voters == {1, 2, 3}


def test_learner_receives_the_log_but_never_votes_or_campaigns() -> None:
    """Learners (non-voting members) replicate but count for neither commit nor elections."""
    ids = [1, 2, 3]
    cores = [make_core(i, ids, learners=[4]) for i in ids] + [make_core(4, ids, learners=[4])]
    net = RaftNet.from_cores(cores)
    net.campaign(1)
    net.nodes[1].propose(b"x")
    net.deliver(drop=isolate(4))
    assert net.applied_data(1) == [b"x"]  # committed without the learner
    net.tick(2)
    assert net.applied_data(4) == [b"x"]  # and replicated to it
    for _ in range(100):
        net.nodes[4].tick()
        net.deliver(drop=isolate(4))
    assert net.nodes[4].role is Role.FOLLOWER
    assert net.nodes[4].term == net.nodes[1].term


def test_learner_is_promoted_to_voter_by_a_single_server_change_4_1() -> None:
    ids = [1, 2, 3]
    net = RaftNet.from_cores(
        [make_core(i, ids, learners=[4]) for i in ids] + [make_core(4, ids, learners=[4])]
    )
    net.campaign(1)
    net.nodes[1].propose_membership(Membership(voters=frozenset({1, 2, 3, 4})))
    net.tick(3)
    assert net.nodes[4].membership.voters == {1, 2, 3, 4}
    assert net.nodes[4].membership.learners == frozenset()
    net.nodes[1].transfer_leadership(4)
    net.deliver()
    assert net.leader() == 4


def test_membership_encoding_round_trips_and_rejects_garbage() -> None:
    m = Membership(voters=frozenset({3, 1}), learners=frozenset({7}))
    assert Membership.decode(m.encode()) == m
    for bad in (b"", b"v=1", b"v=1;l=1", b"v=x;l=", b"l=;v="):
        with pytest.raises(ValueError):
            Membership.decode(bad)


def test_core_restart_recovers_membership_from_log() -> None:
    net = cluster()
    net.nodes[1].propose_membership(Membership(voters=frozenset({1, 2})))
    net.tick(2)
    st = net.storage[2]
    again = RaftCore(
        net.nodes[2].config,
        random.Random(1),
        voters=[1, 2, 3],
        hard_state=st.hard_state,
        snapshot=st.snapshot,
        entries=st.entries,
    )
    assert again.membership.voters == {1, 2}


@pytest.mark.parametrize(
    "bad",
    [
        Message(
            type=MT.APPEND,
            src=1,
            dst=2,
            term=2,
            index=0,
            log_term=0,
            entries=(Entry(index=2, term=1),),
        ),  # gap
        Message(
            type=MT.APPEND,
            src=1,
            dst=2,
            term=2,
            index=0,
            log_term=0,
            entries=(Entry(index=1, term=3),),
        ),  # entry newer than the leader's term
        Message(
            type=MT.APPEND,
            src=1,
            dst=2,
            term=2,
            index=0,
            log_term=0,
            entries=(Entry(index=1, term=2), Entry(index=2, term=1)),
        ),  # terms go down
        Message(type=MT.SNAPSHOT, src=1, dst=2, term=2),  # no snapshot
        Message(type=MT.APPEND, src=1, dst=2, term=2, index=-1),
        *(
            Message(
                type=MT.APPEND,
                src=1,
                dst=2,
                term=2,
                index=0,
                log_term=0,
                entries=(Entry(index=1, term=2, kind=EntryKind.CONFIG, data=data),),
            )  # a configuration entry that is no membership, or one without a voter
            for data in (b"not a membership", b"v=;l=", b"v=1,2;l=2", b"v=1,x;l=")
        ),
        *(
            Message(
                type=MT.SNAPSHOT,
                src=1,
                dst=2,
                term=2,
                snapshot=Snapshot(
                    meta=SnapshotMeta(index=5, term=2, voters=voters, learners=learners)
                ),
            )  # a snapshot whose membership has no voter, or a voter that also learns
            for voters, learners in (
                (frozenset(), frozenset({2})),
                (frozenset({1}), frozenset({1})),
            )
        ),
    ],
)
def test_malformed_messages_are_ignored(bad: Message) -> None:
    """Every byte from outside is hostile: a malformed message changes nothing."""
    f = make_core(2, [1, 2, 3], term=1)
    before = (f.term, f.vote, f.lead, f.log.last_index)
    f.step(bad)
    assert (f.term, f.vote, f.lead, f.log.last_index) == before
    assert not drain(f)


def test_ack_for_entries_never_sent_is_ignored() -> None:
    net = cluster()
    leader = net.nodes[1]
    leader.step(Message(type=MT.APPEND_RESP, src=2, dst=1, term=leader.term, index=999))
    assert leader.log.committed <= leader.log.last_index
    assert leader.progress(2).match <= leader.log.last_index  # type: ignore[union-attr]


def test_forwarded_read_reaching_a_non_leader_is_dropped_6_4() -> None:
    """A read forwarded to a node that is no longer leader is not answered by it."""
    f = make_core(2, [1, 2, 3], term=1)
    f.step(Message(type=MT.HEARTBEAT, src=1, dst=2, term=1))
    drain(f)
    f.step(Message(type=MT.READ_INDEX, src=3, dst=2, term=1, context=b"r"))
    assert drain(f) == []


def test_node_with_uncommitted_self_demotion_may_still_campaign_4_2_2() -> None:
    """A leader appends its own demotion, crashes, restarts holding the newest log.

    Its latest configuration says it is a learner, but the change is not
    committed; if it could not campaign, node 1 (older log) could never win
    and the cluster would be stuck. It campaigns, leads the configuration
    without itself until the change commits, then hands off to node 1.
    """
    net = RaftNet.from_cores(make_core(i, [1, 2]) for i in (1, 2))
    net.campaign(2)
    assert net.leader() == 2
    net.nodes[2].propose_membership(Membership(voters=frozenset({1}), learners=frozenset({2})))
    net.deliver(drop=lambda m: m.dst == 1)  # node 1 never sees the change
    st = net.storage[2]
    net.nodes[2] = RaftCore(
        net.nodes[2].config,
        random.Random(7),
        voters=[1, 2],
        hard_state=st.hard_state,
        snapshot=st.snapshot,
        entries=st.entries,
    )
    assert net.nodes[2].membership.voters == {1}
    net.tick(60)
    assert net.leader() == 1
    assert net.nodes[1].membership == Membership(voters=frozenset({1}), learners=frozenset({2}))
    assert net.nodes[2].role is Role.FOLLOWER
    assert net.nodes[1].log.committed == net.nodes[2].log.committed == net.nodes[1].log.last_index


def test_steps_between_ready_and_advance_land_in_the_next_ready() -> None:
    """The Ready contract allows input while a Ready is being persisted (async drivers)."""
    f = make_core(2, [1, 2, 3], term=1)
    f.step(
        Message(
            type=MT.APPEND,
            src=1,
            dst=2,
            term=1,
            index=0,
            log_term=0,
            entries=(Entry(index=1, term=1), Entry(index=2, term=1)),
        )
    )
    rd = f.ready()
    assert [e.index for e in rd.entries] == [1, 2]
    # While rd is being persisted, a new leader overwrites index 2 and adds 3.
    f.step(
        Message(
            type=MT.APPEND,
            src=3,
            dst=2,
            term=2,
            index=1,
            log_term=1,
            entries=(Entry(index=2, term=2), Entry(index=3, term=2)),
        )
    )
    f.advance(rd)
    rd2 = f.ready()
    assert [(e.index, e.term) for e in rd2.entries] == [(2, 2), (3, 2)]
    assert rd2.hard_state is not None and rd2.hard_state.term == 2
    assert [m.index for m in rd2.messages] == [3]  # the ack travels with the entries it acks
    f.advance(rd2)
    assert not f.has_ready()

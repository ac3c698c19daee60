"""One test per rule of the Raft paper (Ongaro & Ousterhout 2014), sections 5 and 8.

Each test names the section it checks. Pre-vote and check-quorum are off
here (``make_core`` defaults) so the tests see the protocol as the paper
describes it; those extensions are tested in ``test_raft_extensions.py``.
"""

from __future__ import annotations

import pytest

from cellmesh.consensus import EntryKind, Message, MessageType, NotLeader, Role
from cellmesh.consensus.core import RaftCore
from cellmesh.consensus.types import Entry
from cellmesh.testing.raftnet import RaftNet, drain, make_core

MT = MessageType


def msg(t: MessageType, src: int, dst: int, term: int, **kw: object) -> Message:
    return Message(type=t, src=src, dst=dst, term=term, **kw)  # type: ignore[arg-type]


def campaign(core: RaftCore) -> list[Message]:
    """Tick until the election timer fires; return the vote requests."""
    for _ in range(2 * core.config.election_tick):
        core.tick()
        if core.role is not Role.FOLLOWER:
            break
    return drain(core)


def elect(core: RaftCore, voters: list[int]) -> list[Message]:
    """Make ``core`` leader by feeding it granted votes; return its first messages."""
    campaign(core)
    for v in voters:
        if v != core.id and core.role is not Role.LEADER:
            core.step(msg(MT.VOTE_RESP, v, core.id, core.term))
    assert core.role is Role.LEADER
    return drain(core)


def log_terms(core: RaftCore) -> list[int]:
    return [core.log.term(i) or 0 for i in range(1, core.log.last_index + 1)]


# -- section 5.1: terms ------------------------------------------------------------


def test_any_message_with_higher_term_makes_node_follower_section_5_1() -> None:
    """§5.1: a server seeing a larger term adopts it and reverts to follower."""
    leader = make_core(1, [1, 2, 3])
    elect(leader, [1, 2, 3])
    leader.step(msg(MT.APPEND_RESP, 2, 1, leader.term + 3))
    assert leader.role is Role.FOLLOWER
    assert leader.term == 4
    assert leader.vote is None


def test_request_with_stale_term_is_rejected_section_5_1() -> None:
    """§5.1: a request with a stale term is rejected; the reply carries the newer term."""
    f = make_core(2, [1, 2, 3], term=3)
    f.step(msg(MT.APPEND, 1, 2, 2, index=0, log_term=0, entries=(Entry(index=1, term=2),)))
    out = drain(f)
    assert f.log.last_index == 0
    assert f.lead is None
    assert [(m.type, m.term) for m in out] == [(MT.APPEND_RESP, 3)]


# -- section 5.2: leader election -----------------------------------------------------


def test_follower_timeout_starts_election_section_5_2() -> None:
    """§5.2: on election timeout a follower increments its term, votes for itself, asks all."""
    c = make_core(1, [1, 2, 3])
    out = campaign(c)
    assert c.role is Role.CANDIDATE
    assert (c.term, c.vote) == (1, 1)
    assert sorted((m.type, m.dst, m.term) for m in out) == [(MT.VOTE, 2, 1), (MT.VOTE, 3, 1)]


def test_vote_is_persisted_in_the_same_ready_as_the_request_section_5_2() -> None:
    """Figure 2: currentTerm/votedFor are persisted before the RPCs that reveal them."""
    c = make_core(1, [1, 2, 3])
    for _ in range(20):
        c.tick()
    rd = c.ready()
    assert rd.messages
    assert rd.hard_state is not None
    assert (rd.hard_state.term, rd.hard_state.vote) == (1, 1)


def test_election_timeouts_are_randomized_in_range_section_5_2() -> None:
    """§5.2: timeouts are drawn from [T, 2T) so split votes are rare."""
    seen = set()
    for seed in range(40):
        c = make_core(1, [1, 2, 3], seed=seed, election_tick=10)
        ticks = 0
        while c.role is Role.FOLLOWER:
            c.tick()
            ticks += 1
        assert 10 <= ticks < 20
        seen.add(ticks)
    assert len(seen) > 3


def test_candidate_with_majority_of_votes_becomes_leader_section_5_2() -> None:
    """§5.2: a candidate that receives votes from a majority becomes leader."""
    c = make_core(1, [1, 2, 3, 4, 5])
    campaign(c)
    roles = []
    for voter in (2, 2, 3):  # the duplicate vote from 2 counts once
        c.step(msg(MT.VOTE_RESP, voter, 1, 1))
        roles.append(c.role)
    assert roles == [Role.CANDIDATE, Role.CANDIDATE, Role.LEADER]  # 3 of 5 is a majority
    assert c.lead == 1


def test_candidate_denied_by_majority_returns_to_follower_section_5_2() -> None:
    c = make_core(1, [1, 2, 3])
    campaign(c)
    c.step(msg(MT.VOTE_RESP, 2, 1, 1, reject=True))
    c.step(msg(MT.VOTE_RESP, 3, 1, 1, reject=True))
    assert c.role is Role.FOLLOWER
    assert c.term == 1


def test_split_vote_times_out_into_a_new_term_section_5_2() -> None:
    """§5.2: with no winner, the candidate times out and starts a new election."""
    c = make_core(1, [1, 2, 3])
    campaign(c)
    assert c.term == 1
    out = campaign_again(c)
    assert c.role is Role.CANDIDATE
    assert c.term == 2
    assert {m.term for m in out} == {2}


def campaign_again(core: RaftCore) -> list[Message]:
    for _ in range(2 * core.config.election_tick):
        core.tick()
    return drain(core)


def test_candidate_steps_down_for_leader_of_same_term_section_5_2() -> None:
    """§5.2: a candidate that hears AppendEntries from a leader of its term steps down."""
    c = make_core(1, [1, 2, 3])
    campaign(c)
    c.step(msg(MT.APPEND, 2, 1, 1, index=0, log_term=0))
    assert c.role is Role.FOLLOWER
    assert c.lead == 2
    assert c.term == 1


def test_one_vote_per_term_first_come_first_served_section_5_2() -> None:
    """§5.2: each server votes for at most one candidate in a term."""
    f = make_core(3, [1, 2, 3])
    f.step(msg(MT.VOTE, 1, 3, 1))
    f.step(msg(MT.VOTE, 2, 3, 1))
    f.step(msg(MT.VOTE, 1, 3, 1))  # a retransmission is granted again
    out = drain(f)
    assert [(m.dst, m.reject) for m in out] == [(1, False), (2, True), (1, False)]
    assert f.vote == 1


def test_vote_survives_restart_section_5_2() -> None:
    """Figure 2: votedFor is persistent, so a restarted node will not vote twice."""
    f = make_core(3, [1, 2, 3])
    f.step(msg(MT.VOTE, 1, 3, 1))
    rd = f.ready()
    assert rd.hard_state is not None
    restarted = make_core(3, [1, 2, 3], term=rd.hard_state.term, vote=rd.hard_state.vote)
    restarted.step(msg(MT.VOTE, 2, 3, 1))
    assert [m.reject for m in drain(restarted)] == [True]


def test_leader_sends_heartbeats_every_heartbeat_tick_section_5_2() -> None:
    """§5.2: leaders send periodic heartbeats to maintain their authority."""
    c = make_core(1, [1, 2, 3], heartbeat_tick=2)
    elect(c, [1, 2, 3])
    c.tick()
    assert not [m for m in drain(c) if m.type is MT.HEARTBEAT]
    c.tick()
    assert sorted(m.dst for m in drain(c) if m.type is MT.HEARTBEAT) == [2, 3]


def test_heartbeat_resets_follower_election_timer_section_5_2() -> None:
    f = make_core(2, [1, 2, 3], election_tick=10)
    for _ in range(100):
        f.tick()
        f.step(msg(MT.HEARTBEAT, 1, 2, max(f.term, 1)))
        drain(f)
    assert f.role is Role.FOLLOWER
    assert f.lead == 1


# -- section 5.3: log replication ---------------------------------------------------------


def test_proposal_commits_once_stored_on_a_majority_section_5_3() -> None:
    """§5.3: an entry is committed once the leader replicated it on a majority."""
    net = RaftNet.from_cores(make_core(n, [1, 2, 3]) for n in (1, 2, 3))
    net.campaign(1)
    index = net.nodes[1].propose(b"cmd")
    net.deliver(drop=lambda m: 3 in (m.src, m.dst))
    assert net.nodes[1].log.committed == index
    assert net.applied_data(1) == [b"cmd"]
    assert net.nodes[3].log.last_index < index  # node 3 never saw it


def test_proposal_on_follower_raises_not_leader_with_hint_section_5_1() -> None:
    """§5.1: clients talk to the leader; a follower redirects them."""
    net = RaftNet.from_cores(make_core(n, [1, 2, 3]) for n in (1, 2, 3))
    net.campaign(1)
    with pytest.raises(NotLeader) as info:
        net.nodes[2].propose(b"x")
    assert info.value.leader_hint == 1
    with pytest.raises(NotLeader) as info2:
        make_core(9, [9, 8]).propose(b"x")
    assert info2.value.leader_hint is None


def test_append_consistency_check_rejects_missing_or_mismatched_prev_section_5_3() -> None:
    """§5.3: a follower refuses entries unless it holds (prevLogIndex, prevLogTerm)."""
    f = make_core(2, [1, 2, 3], term=2, log_terms=[1, 1])
    f.step(msg(MT.APPEND, 1, 2, 2, index=3, log_term=1, entries=(Entry(index=4, term=2),)))
    f.step(msg(MT.APPEND, 1, 2, 2, index=2, log_term=2, entries=(Entry(index=3, term=2),)))
    out = drain(f)
    assert [(m.reject, m.index, m.reject_hint) for m in out] == [(True, 3, 2), (True, 2, 2)]
    assert log_terms(f) == [1, 1]


def test_follower_deletes_conflicting_entries_and_appends_section_5_3() -> None:
    """§5.3 / Figure 2 step 3-4: a conflict deletes the entry and all that follow it."""
    f = make_core(2, [1, 2, 3], term=3, log_terms=[1, 1, 2, 2])
    f.step(msg(MT.APPEND, 1, 2, 3, index=2, log_term=1, entries=(Entry(index=3, term=3),)))
    assert log_terms(f) == [1, 1, 3]
    # A delayed, shorter copy of an append already applied truncates nothing.
    f.step(msg(MT.APPEND, 1, 2, 3, index=1, log_term=1, entries=(Entry(index=2, term=1),)))
    assert log_terms(f) == [1, 1, 3]


def test_follower_commit_is_min_of_leader_commit_and_last_new_entry_section_5_3() -> None:
    """Figure 2 step 5: commitIndex = min(leaderCommit, index of last new entry)."""
    f = make_core(2, [1, 2, 3], term=1, log_terms=[1, 1, 1, 1])
    f.step(
        msg(MT.APPEND, 1, 2, 2, index=1, log_term=1, entries=(Entry(index=2, term=2),), commit=4)
    )
    assert f.log.committed == 2
    assert log_terms(f) == [1, 2]


@pytest.mark.parametrize(
    "follower",
    [
        [1, 1, 1, 4, 4, 5, 5, 6, 6],  # (a) missing entries
        [1, 1, 1, 4],  # (b) missing many
        [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],  # (c) extra uncommitted entry
        [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],  # (d) extra entries of a later term
        [1, 1, 1, 4, 4, 4, 4],  # (e) missing and extra
        [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],  # (f) leader of terms 2 and 3 that never committed
    ],
    ids=["a", "b", "c", "d", "e", "f"],
)
def test_leader_repairs_every_figure_7_follower_section_5_3(follower: list[int]) -> None:
    """§5.3 / Figure 7: backing off nextIndex finds the match and overwrites the rest."""
    leader_log = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
    leader = make_core(1, [1, 2], term=7, log_terms=leader_log)
    f = make_core(2, [1, 2], term=7, log_terms=follower)
    net = RaftNet.from_cores([leader, f])
    net.queue.extend(elect(leader, [1, 2]))
    assert leader.term == 8
    net.deliver()
    assert log_terms(f) == [*leader_log, 8]  # plus the new leader's no-op
    assert leader.log.committed == 11
    net.tick(1, only=[1])  # the next heartbeat carries the commit index
    assert f.log.committed == 11


def test_new_leader_appends_noop_of_its_term_section_8() -> None:
    """§8: a new leader commits a blank no-op entry at the start of its term."""
    c = make_core(1, [1, 2, 3], log_terms=[1], term=1)
    out = elect(c, [1, 2, 3])
    last = c.log.entry(c.log.last_index)
    assert (last.index, last.term, last.kind) == (2, 2, EntryKind.NOOP)
    assert all(m.type is MT.APPEND for m in out)


# -- section 5.4: safety ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("cand_last_index", "cand_last_term", "granted"),
    [
        (2, 1, False),  # older last term, even if as long
        (5, 1, False),  # older last term, even if longer
        (1, 2, False),  # same last term, shorter
        (2, 2, True),  # same last term, same length
        (3, 2, True),  # same last term, longer
        (1, 3, True),  # newer last term, even if shorter
    ],
)
def test_vote_denied_to_candidate_with_less_up_to_date_log_section_5_4_1(
    cand_last_index: int, cand_last_term: int, granted: bool
) -> None:
    """§5.4.1: compare last terms first, then lengths."""
    voter = make_core(3, [1, 2, 3], term=2, log_terms=[1, 2])
    voter.step(msg(MT.VOTE, 1, 3, 3, index=cand_last_index, log_term=cand_last_term))
    (resp,) = drain(voter)
    assert resp.reject is (not granted)


def test_never_commit_previous_term_entry_by_counting_replicas_figure_8_section_5_4_2() -> None:
    """§5.4.2 / Figure 8: an old-term entry on a majority is not committed by counting.

    S1 leads term 4 with entry (2, term 2) and gets it onto S2 and S3 -- a
    majority of five -- while S5 holds (2, term 3) and could still be elected
    with votes from S2, S3, S4 and overwrite it. So S1 must not commit index 2
    until an entry of its own term (its no-op at index 3) is on a majority;
    that then commits index 2 indirectly.
    """
    voters = [1, 2, 3, 4, 5]
    s1 = make_core(1, voters, term=3, log_terms=[1, 2])
    s2 = make_core(2, voters, term=3, log_terms=[1, 2])
    s3 = make_core(3, voters, term=3, log_terms=[1])
    elect(s1, [1, 2, 3])
    assert s1.term == 4 and s1.log.last_index == 3
    e2 = s1.log.entry(2)
    # Replicate only entry 2 (not the no-op) to S2 and S3, and let them ack.
    for f in (s2, s3):
        f.step(msg(MT.APPEND, 1, f.id, 4, index=1, log_term=1, entries=(e2,)))
        (ack,) = drain(f)
        assert (ack.reject, ack.index) == (False, 2)
        s1.step(ack)
    assert s1.progress(2).match == 2 and s1.progress(3).match == 2  # type: ignore[union-attr]
    assert s1.log.committed < 2  # three replicas of a term-2 entry: still not committed
    # Once the term-4 no-op reaches a majority, everything up to it commits.
    noop = s1.log.entry(3)
    for f in (s2, s3):
        f.step(msg(MT.APPEND, 1, f.id, 4, index=2, log_term=2, entries=(noop,)))
        for ack in drain(f):
            s1.step(ack)
    assert s1.log.committed == 3


def test_leader_never_overwrites_its_own_log_section_5_3() -> None:
    """§5.3 Leader Append-Only: a leader ignores appends and keeps its entries."""
    c = make_core(1, [1, 2, 3], term=1, log_terms=[1, 1])
    elect(c, [1, 2, 3])
    before = log_terms(c)
    c.step(msg(MT.APPEND, 2, 1, c.term, index=0, log_term=0, entries=(Entry(index=1, term=9),)))
    assert log_terms(c) == before
    assert c.role is Role.LEADER


def test_conflict_term_hint_skips_a_whole_term_per_round_trip_section_5_3() -> None:
    """§5.3 (end): with the conflicting term in the rejection, Figure 7 (f) needs 1 retry.

    Without it the leader would back off one entry per round trip (7 rejections).
    """
    net = RaftNet.from_cores(
        [
            make_core(1, [1, 2], term=7, log_terms=[1, 1, 1, 4, 4, 5, 5, 6, 6, 6]),
            make_core(2, [1, 2], term=7, log_terms=[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]),
        ]
    )
    net.queue.extend(elect(net.nodes[1], [1, 2]))
    seen: list[Message] = []

    def record(m: Message) -> bool:
        if m.type is MT.APPEND_RESP and m.reject:
            seen.append(m)
        return False

    net.deliver(drop=record)
    assert len(seen) == 1
    assert (seen[0].reject_hint, seen[0].log_term) == (10, 3)
    assert log_terms(net.nodes[2]) == log_terms(net.nodes[1])

"""Each safety check of the simulator fires on a staged violation (the checker has teeth)."""

from __future__ import annotations

import pytest

from cellmesh.consensus import Entry, Message, MessageType, RaftCore, Ready, Role
from cellmesh.testing.raftcheck import InvariantViolation, SafetyChecker
from cellmesh.testing.raftnet import drain, make_core

MT = MessageType


def leader_core(node: int, term: int, log_terms: list[int]) -> RaftCore:
    core = make_core(node, [1, 2, 3], term=term - 1, log_terms=log_terms)
    for _ in range(30):
        core.tick()
        if core.role is not Role.FOLLOWER:
            break
    core.step(Message(type=MT.VOTE_RESP, src=2 if node != 2 else 1, dst=node, term=term))
    drain(core)
    assert core.role is Role.LEADER and core.term == term
    return core


def ready_cycle(chk: SafetyChecker, node: int, core: RaftCore, rd: Ready) -> None:
    """What the simulator reports for a Ready that was synced."""
    chk.on_ready(node, core, rd)
    chk.on_durable(node, core, rd)


def test_checker_flags_two_leaders_in_one_term() -> None:
    """Election Safety (Figure 3)."""
    chk = SafetyChecker()
    a, b = leader_core(1, 2, [1]), leader_core(2, 2, [1])
    for c in (a, b):
        chk.on_start(c.id, make_core(c.id, [1, 2, 3]))
    ready_cycle(chk, 1, a, Ready())
    with pytest.raises(InvariantViolation, match="Election Safety"):
        ready_cycle(chk, 2, b, Ready())


def test_checker_ignores_a_leadership_lost_before_its_ready_was_durable() -> None:
    """Election Safety counts durable leaderships only (the simulator's false alarm of
    seed 20562, harsh mix): a single-voter leader that crashed before syncing the
    Ready that made it leader revealed nothing, so another node may lead that term."""
    chk = SafetyChecker()
    a, b = leader_core(1, 2, [1]), leader_core(2, 2, [1])
    for c in (a, b):
        chk.on_start(c.id, make_core(c.id, [1, 2, 3]))
    chk.on_ready(1, a, Ready())  # taken, written, then the node crashed before the fsync
    chk.on_start(1, make_core(1, [1, 2, 3], term=1))
    ready_cycle(chk, 2, b, Ready())
    assert chk.leaders == {2: 2}


def test_checker_flags_different_entries_with_same_index_and_term() -> None:
    """Log Matching (Figure 3)."""
    chk = SafetyChecker()
    f = make_core(2, [1, 2, 3], log_terms=[1, 1])
    chk.on_start(2, f)
    ready_cycle(chk, 2, f, Ready(entries=(f.log.entry(2),)))
    other = Entry(index=2, term=1, data=b"different")
    with pytest.raises(InvariantViolation, match="Log Matching"):
        ready_cycle(chk, 2, f, Ready(entries=(other,)))


def test_checker_ignores_entries_lost_before_their_ready_was_durable() -> None:
    """Log Matching registers durable entries only: an entry handed out in a Ready that
    a crash took back may be followed by a different entry at the same index and term
    (written by another leader of that term); entries a crash kept are registered."""
    chk = SafetyChecker()
    f = make_core(2, [1, 2, 3], log_terms=[1])
    chk.on_start(2, f)
    lost = Entry(index=2, term=1, data=b"lost")
    chk.on_ready(2, f, Ready(entries=(lost,)))
    chk.on_start(2, make_core(2, [1, 2, 3], log_terms=[1]))  # crashed before the fsync
    other = Entry(index=2, term=1, data=b"other")
    ready_cycle(chk, 2, f, Ready(entries=(other,)))
    assert chk.entries[(2, 1)] == (other.kind, b"other", 1)
    # A crash that kept an unsynced write (a flushed prefix) registers what survived.
    kept = make_core(3, [1, 2, 3], log_terms=[1, 1, 1])
    with pytest.raises(InvariantViolation, match="Log Matching"):
        chk.on_start(3, kept)  # its entry 2 (data b"2") differs from the durable b"other"


def test_checker_flags_a_new_leader_missing_a_committed_entry() -> None:
    """Leader Completeness (Figure 3)."""
    chk = SafetyChecker()
    f = make_core(3, [1, 2, 3], log_terms=[1, 1], commit=2)
    chk.on_start(3, f)  # registers indexes 1-2 as committed
    stale = leader_core(1, 5, [1])
    chk.on_start(1, make_core(1, [1, 2, 3]))
    with pytest.raises(InvariantViolation, match="Leader Completeness"):
        ready_cycle(chk, 1, stale, Ready())


def test_checker_flags_two_entries_applied_at_one_index() -> None:
    """State Machine Safety (Figure 3)."""
    chk = SafetyChecker()
    for n in (1, 2):
        chk.on_start(n, make_core(n, [1, 2]))
    chk.on_apply(1, [Entry(index=1, term=1, data=b"a")])
    with pytest.raises(InvariantViolation, match="State Machine Safety"):
        chk.on_apply(2, [Entry(index=1, term=1, data=b"b")])


def test_checker_flags_a_gap_in_applied_entries() -> None:
    chk = SafetyChecker()
    chk.on_start(1, make_core(1, [1]))
    with pytest.raises(InvariantViolation, match="monotonic apply"):
        chk.on_apply(1, [Entry(index=2, term=1)])


def test_checker_flags_two_votes_in_one_term_and_term_regression() -> None:
    chk = SafetyChecker()
    chk.on_send(Message(type=MT.VOTE_RESP, src=3, dst=1, term=4))
    with pytest.raises(InvariantViolation, match="one vote per term"):
        chk.on_send(Message(type=MT.VOTE_RESP, src=3, dst=2, term=4))
    with pytest.raises(InvariantViolation, match="durable term"):
        chk.on_start(3, make_core(3, [1, 2, 3], term=3))


def test_checker_flags_commit_going_backwards() -> None:
    chk = SafetyChecker()
    c = make_core(1, [1], log_terms=[1, 1], commit=2)
    chk.on_start(1, c)
    c.log.committed = 1  # simulate a buggy core
    with pytest.raises(InvariantViolation, match="monotonic commit"):
        chk.on_ready(1, c, Ready())


def test_checker_pairwise_log_comparison() -> None:
    chk = SafetyChecker()
    a = make_core(1, [1, 2], log_terms=[1, 2])
    b = make_core(2, [1, 2], log_terms=[1, 2])
    chk.check_logs_pairwise({1: a, 2: b})
    b.log._entries[0] = Entry(index=1, term=1, data=b"tampered")
    with pytest.raises(InvariantViolation, match="Log Matching"):
        chk.check_logs_pairwise({1: a, 2: b})

"""Property tests (hypothesis) of the pure helpers: quorum math, the log, flow control."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cellmesh.consensus.log import RaftLog
from cellmesh.consensus.progress import Progress, ProgressState
from cellmesh.consensus.quorum import VoteResult, committed_index, has_quorum, vote_result
from cellmesh.consensus.types import Entry, Snapshot, SnapshotMeta

voter_sets = st.frozensets(st.integers(1, 9), min_size=1, max_size=7)


@given(voter_sets, st.dictionaries(st.integers(1, 9), st.integers(0, 50)))
def test_committed_index_is_highest_index_on_a_majority_section_5_3(
    voters: frozenset[int], match: dict[int, int]
) -> None:
    """§5.3: the commit point is the largest N with a majority of match >= N."""
    got = committed_index(voters, match)
    need = len(voters) // 2 + 1
    brute = max(
        (n for n in range(0, 51) if sum(match.get(v, 0) >= n for v in voters) >= need),
        default=0,
    )
    assert got == brute


@given(voter_sets, st.dictionaries(st.integers(1, 9), st.booleans()))
def test_vote_result_matches_counting_section_5_2(
    voters: frozenset[int], votes: dict[int, bool]
) -> None:
    need = len(voters) // 2 + 1
    yes = sum(votes.get(v) is True for v in voters)
    no = sum(votes.get(v) is False for v in voters)
    result = vote_result(voters, votes)
    if yes >= need:
        assert result is VoteResult.WON
    elif len(voters) - no < need:
        assert result is VoteResult.LOST
    else:
        assert result is VoteResult.PENDING
    assert has_quorum(voters, [v for v in voters if votes.get(v)]) == (yes >= need)


def test_empty_voter_set_has_no_quorum() -> None:
    assert not has_quorum(frozenset(), [1])
    assert committed_index(frozenset(), {1: 5}) == 0


def term_lists(max_size: int = 12) -> st.SearchStrategy[list[int]]:
    """Non-decreasing term sequences, i.e. possible Raft logs."""
    return st.lists(st.integers(1, 4), max_size=max_size).map(sorted)


def make_log(terms: list[int]) -> RaftLog:
    entries = [Entry(index=i, term=t, data=b"%d" % t) for i, t in enumerate(terms, start=1)]
    return RaftLog(Snapshot(meta=SnapshotMeta(index=0, term=0)), entries)


def terms_of(log: RaftLog) -> list[int]:
    return [log.term(i) or 0 for i in range(1, log.last_index + 1)]


@settings(max_examples=300)
@given(term_lists(), st.data())
def test_maybe_append_makes_follower_match_leader_prefix_section_5_3(
    leader_terms: list[int], data: st.DataObject
) -> None:
    """§5.3: after a successful append, the follower's log equals the leader's through it.

    (The Log Matching property, driven by the AppendEntries consistency check.)
    The follower shares a prefix with the leader and then diverges with terms
    the leader never used, as two logs obeying Log Matching do.
    """
    common = data.draw(st.integers(0, len(leader_terms)))
    suffix = sorted(data.draw(st.lists(st.integers(5, 8), max_size=6)))
    follower = make_log(leader_terms[:common] + suffix)
    leader = make_log(leader_terms)
    prev = data.draw(st.integers(0, leader.last_index))
    hi = data.draw(st.integers(prev, leader.last_index))
    ents = leader.entries_from(prev + 1, hi - prev) if hi > prev else ()
    before = terms_of(follower)
    res = follower.maybe_append(prev, leader.term(prev) or 0, ents)
    if res is None:
        assert terms_of(follower) == before
        assert follower.term(prev) != leader.term(prev)
        return
    last_new, _ = res
    assert last_new == hi
    assert terms_of(follower)[:hi] == terms_of(leader)[:hi]
    # Entries after the appended range survive only if nothing conflicted.
    if follower.last_index > hi:
        assert terms_of(follower)[hi:] == before[hi:]


@given(term_lists(), st.integers(0, 4), st.integers(0, 20))
def test_up_to_date_is_a_total_preorder_section_5_4_1(
    terms: list[int], cand_term: int, cand_index: int
) -> None:
    """§5.4.1: exactly one of (candidate at least as new, voter strictly newer) holds."""
    log = make_log(terms)
    strictly_newer = (log.last_term, log.last_index) > (cand_term, cand_index)
    assert log.is_up_to_date(cand_index, cand_term) is (not strictly_newer)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["send", "ack", "reject", "probe", "replicate"]), st.integers(0, 30)
        ),
        max_size=60,
    )
)
def test_progress_keeps_match_below_next_and_inflights_bounded(
    ops: list[tuple[str, int]],
) -> None:
    """Flow control invariants: match < next, and never more than max_inflight in flight."""
    pr = Progress(match=0, next=1, max_inflight=3)
    for op, n in ops:
        if op == "send" and not pr.is_paused():
            pr.sent_entries(pr.next - 1 + n % 4)
        elif op == "ack":
            pr.maybe_update(min(n, pr.next - 1))
        elif op == "reject":
            pr.maybe_decrease_to(pr.next - 1, n)
        elif op == "probe":
            pr.become_probe()
        elif op == "replicate":
            pr.become_replicate()
        assert pr.match < pr.next
        assert len(pr.inflights) <= pr.max_inflight
        if pr.state is ProgressState.PROBE:
            assert not pr.inflights


@given(term_lists(), st.integers(0, 15), st.integers(0, 5))
def test_find_conflict_by_term_skips_only_newer_terms_section_5_3(
    terms: list[int], index: int, term: int
) -> None:
    """§5.3 (end): the probe point skips exactly the entries whose term is newer."""
    log = make_log(terms)
    got = log.find_conflict_by_term(index, term)
    top = min(index, log.last_index)
    assert 0 <= got <= top
    assert got == 0 or (log.term(got) or 0) <= term
    assert all((log.term(i) or 0) > term for i in range(got + 1, top + 1))

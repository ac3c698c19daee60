"""Catching up a new server before it votes (dissertation 4.2.1), as a pure state machine."""

from __future__ import annotations

import pytest

from cellmesh.consensus.catchup import CatchUp, Verdict


def test_catch_up_idle_learner_already_caught_up_is_promoted_at_once_4_2_1() -> None:
    rounds = CatchUp(round_ticks=10)
    assert rounds.observe(match=50, last_index=50) is Verdict.CAUGHT_UP
    assert rounds.round == 1


def test_catch_up_ends_with_a_round_shorter_than_an_election_timeout_4_2_1() -> None:
    """4.2.1: each round replicates what the leader held when it began; a round that
    finishes within one election timeout ends the catch-up."""
    rounds = CatchUp(round_ticks=10)
    leader_last = 1000
    match = 0
    verdicts = []
    while not verdicts or verdicts[-1] is Verdict.WAITING:
        leader_last += 5  # the cluster keeps writing
        match = min(match + 100, leader_last)  # the learner copies 100 entries a tick
        verdicts.append(rounds.observe(match, leader_last))
    assert verdicts[-1] is Verdict.CAUGHT_UP
    assert rounds.round == 2  # round 1 (1005 entries) took 11 ticks: too long
    assert len(verdicts) == 12


def test_catch_up_fails_after_max_rounds_of_a_too_slow_learner_4_2_1() -> None:
    """4.2.1: a learner that never gets within an election timeout is not promoted."""
    rounds = CatchUp(round_ticks=3, max_rounds=4, stall_ticks=1000)
    leader_last, match = 100, 0
    for _ in range(1000):
        leader_last += 10
        match += 8  # slower than the leader appends
        verdict = rounds.observe(match, leader_last)
        if verdict is not Verdict.WAITING:
            break
    assert verdict is Verdict.FAILED
    assert rounds.round == 4 and "after 4 rounds" in rounds.problem


def test_catch_up_fails_when_the_learner_makes_no_progress() -> None:
    rounds = CatchUp(round_ticks=10, stall_ticks=5)
    verdicts = [rounds.observe(match=3, last_index=100) for _ in range(6)]
    assert verdicts[:-1] == [Verdict.WAITING] * 5  # the first observation sets the mark
    assert verdicts[-1] is Verdict.FAILED and "no progress" in rounds.problem


def test_catch_up_rejects_nonsense_parameters() -> None:
    with pytest.raises(ValueError):
        CatchUp(round_ticks=0)

"""Majority arithmetic over a set of voters: commit index, vote tally, liveness.

Theory of operation: Raft decides everything by majorities of the current
voters (learners never count). These helpers are pure functions of a voter set
and a per-node observation, so they are tested exhaustively on their own. A
majority of ``n`` voters is ``n // 2 + 1``; an empty voter set has no majority.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping


class VoteResult(enum.Enum):
    """Outcome of a tally: a majority granted, a majority denied, or still open."""

    WON = "won"
    LOST = "lost"
    PENDING = "pending"


def majority(voters: frozenset[int]) -> int:
    """The number of voters that form a quorum (``len // 2 + 1``)."""
    return len(voters) // 2 + 1


def committed_index(voters: frozenset[int], match: Mapping[int, int]) -> int:
    """The highest index stored on a majority of ``voters`` (section 5.3).

    ``match`` maps node id to the highest index known replicated there;
    missing voters count as 0. Returns 0 for an empty voter set.
    """
    if not voters:
        return 0
    acked = sorted((match.get(v, 0) for v in voters), reverse=True)
    return acked[majority(voters) - 1]


def vote_result(voters: frozenset[int], votes: Mapping[int, bool]) -> VoteResult:
    """Tally ``votes`` (id -> granted) counting only ``voters`` (section 5.2)."""
    granted = sum(1 for v in voters if votes.get(v) is True)
    denied = sum(1 for v in voters if votes.get(v) is False)
    need = majority(voters)
    if granted >= need:
        return VoteResult.WON
    if len(voters) - denied < need:
        return VoteResult.LOST
    return VoteResult.PENDING


def has_quorum(voters: frozenset[int], present: Iterable[int]) -> bool:
    """Whether ``present`` contains a majority of ``voters``."""
    seen = set(present)
    return bool(voters) and sum(1 for v in voters if v in seen) >= majority(voters)


__all__ = ["VoteResult", "committed_index", "has_quorum", "majority", "vote_result"]

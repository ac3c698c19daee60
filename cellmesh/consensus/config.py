"""Static parameters of a Raft node and the randomness it is given.

Theory of operation: everything that is fixed for a node's lifetime lives in
:class:`RaftConfig`, validated once at construction. Randomness (the
election-timeout draw) is not taken from a global generator but passed in as
any object satisfying :class:`RandomSource` -- ``random.Random`` does, and a
seeded one makes a run reproducible.
"""

from __future__ import annotations

from typing import Protocol

import attrs


class RandomSource(Protocol):
    """What the core needs from a PRNG; ``random.Random`` satisfies it."""

    def randrange(self, start: int, stop: int, /) -> int:
        """A uniform integer in ``[start, stop)``."""
        ...

    def random(self) -> float:
        """A uniform float in ``[0, 1)``."""
        ...


@attrs.frozen(kw_only=True)
class RaftConfig:
    """Static parameters of one node.

    ``election_tick`` must exceed ``heartbeat_tick``; each election timeout
    is drawn uniformly from ``[election_tick, 2 * election_tick)`` ticks.
    """

    id: int
    election_tick: int = 10
    heartbeat_tick: int = 1
    max_inflight: int = 64
    max_entries_per_message: int = 64
    pre_vote: bool = True
    check_quorum: bool = True

    def __attrs_post_init__(self) -> None:
        if self.id <= 0:
            raise ValueError("node ids must be positive")
        if self.heartbeat_tick <= 0 or self.election_tick <= self.heartbeat_tick:
            raise ValueError("need 0 < heartbeat_tick < election_tick")
        if self.max_inflight <= 0 or self.max_entries_per_message <= 0:
            raise ValueError("max_inflight and max_entries_per_message must be positive")

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
    An append carries at most ``max_entries_per_message`` entries and at most
    ``max_bytes_per_message`` bytes of entry data (always one entry at least): a
    follower far behind a log of large entries (a ledger's batches of 8190
    transfers are about 1 MB each) gets it in steps it can acknowledge one by
    one, not in one message it cannot take in before the leader gives up on it.
    Likewise a Ready hands out at most ``max_committed_bytes_per_ready`` bytes of
    committed entries (always one at least): applying them (a ledger entry of 8190
    transfers takes a few hundred ms) never holds up for long the persisting and
    acknowledging of newer entries, which the next Ready does.
    """

    id: int
    election_tick: int = 10
    heartbeat_tick: int = 1
    max_inflight: int = 64
    max_entries_per_message: int = 64
    max_bytes_per_message: int = 1 << 20
    max_committed_bytes_per_ready: int = 1 << 20
    pre_vote: bool = True
    check_quorum: bool = True

    def __attrs_post_init__(self) -> None:
        if self.id <= 0:
            raise ValueError("node ids must be positive")
        if self.heartbeat_tick <= 0 or self.election_tick <= self.heartbeat_tick:
            raise ValueError("need 0 < heartbeat_tick < election_tick")
        if min(self.max_inflight, self.max_entries_per_message, self.max_bytes_per_message,
               self.max_committed_bytes_per_ready) <= 0:
            raise ValueError("max_inflight, max_entries_per_message, max_bytes_per_message and "
                             "max_committed_bytes_per_ready must be positive")

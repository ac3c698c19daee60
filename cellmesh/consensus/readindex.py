"""Leader-side bookkeeping for ReadIndex linearizable reads (dissertation 6.4).

Theory of operation: a read is safe to serve at the leader's commit index
once the leader knows it was still the leader *after* the read arrived. The
leader numbers each read with an increasing sequence number and sends it in
its next heartbeats; followers echo the highest number they saw. When a
majority of voters (the leader counts itself) has echoed a number ``>= s``,
every read up to ``s`` is confirmed and may be released with the commit index
recorded when it arrived. Reads that arrive before the leader committed an
entry of its own term wait (the leader does not yet know the commit index).
Everything is dropped when leadership changes; readers retry.
"""

from __future__ import annotations

import attrs

from cellmesh.consensus import quorum


@attrs.define(eq=False)
class PendingRead:
    """One read waiting for confirmation; ``requester`` is the node to answer."""

    seq: int
    index: int
    context: bytes
    requester: int


@attrs.define(eq=False)
class ReadIndexTracker:
    """Pending reads, their sequence numbers and the followers' echoes."""

    seq: int = 0
    _pending: list[PendingRead] = attrs.field(factory=list)
    _awaiting_commit: list[PendingRead] = attrs.field(factory=list)
    _acks: dict[int, int] = attrs.field(factory=dict)

    def reset(self) -> None:
        """Forget every pending read and echo (leadership changed)."""
        self._pending = []
        self._awaiting_commit = []
        self._acks = {}

    def await_commit(self, context: bytes, requester: int) -> None:
        """Park a read until the leader commits an entry of its term."""
        self._awaiting_commit.append(PendingRead(0, 0, context, requester))

    def take_awaiting_commit(self) -> list[PendingRead]:
        """Remove and return the parked reads (their term's entry committed)."""
        waiting, self._awaiting_commit = self._awaiting_commit, []
        return waiting

    def add(self, index: int, context: bytes, requester: int) -> None:
        """Register a read at commit ``index``; the next heartbeats carry :attr:`seq`."""
        self.seq += 1
        self._pending.append(PendingRead(self.seq, index, context, requester))

    def ack(self, node: int, seq: int) -> bool:
        """Record that ``node`` echoed ``seq``; returns whether that is news."""
        if seq <= self._acks.get(node, 0):
            return False
        self._acks[node] = seq
        return True

    def release(self, leader: int, voters: frozenset[int]) -> list[PendingRead]:
        """Remove and return every read a majority of ``voters`` has confirmed."""
        acks = dict(self._acks)
        acks[leader] = self.seq
        confirmed = quorum.committed_index(voters, acks)
        done = []
        while self._pending and self._pending[0].seq <= confirmed:
            done.append(self._pending.pop(0))
        return done

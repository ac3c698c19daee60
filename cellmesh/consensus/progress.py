"""The leader's view of one follower's replication: match/next and flow control.

Theory of operation (after etcd's ``tracker.Progress``): the leader keeps, per
follower, ``match`` (highest index known replicated there) and ``next`` (the
next index to send). A progress is in one of three states:

* ``PROBE`` -- the leader does not know where the follower's log diverges. It
  sends at most one AppendEntries per heartbeat interval and backs ``next`` off
  on each rejection (section 5.3's consistency check drives the search).
* ``REPLICATE`` -- the follower accepted an append, so the leader pipelines:
  it advances ``next`` optimistically after each send and bounds the number of
  unacknowledged appends by an in-flight limit.
* ``SNAPSHOT`` -- ``next`` fell below the leader's first log index; an
  InstallSnapshot is outstanding and replication pauses until it is acked or a
  heartbeat response shows the follower is reachable again (then re-probe).

Invariant: ``match < next`` always holds. ``match`` only goes down when a
follower proves it lost entries it had acknowledged (a replica whose state was
wiped rejoining): the leader then replicates to it from what it really has.
"""

from __future__ import annotations

import enum
from collections import deque

import attrs


class ProgressState(enum.Enum):
    """Flow-control state of one follower, see the module docstring."""

    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


@attrs.define(eq=False)
class Progress:
    """Mutable replication bookkeeping the leader keeps for one peer."""

    match: int
    next: int
    max_inflight: int
    state: ProgressState = ProgressState.PROBE
    probe_sent: bool = False
    pending_snapshot: int = 0
    recent_active: bool = False
    inflights: deque[int] = attrs.field(factory=deque)

    def become_probe(self) -> None:
        """Fall back to probing from just after ``match`` (or the sent snapshot)."""
        if self.state is ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self._reset(ProgressState.PROBE)

    def become_replicate(self) -> None:
        """Start pipelining from just after ``match``."""
        self.next = self.match + 1
        self._reset(ProgressState.REPLICATE)

    def become_snapshot(self, snapshot_index: int) -> None:
        """Record that a snapshot ending at ``snapshot_index`` was sent."""
        self._reset(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def _reset(self, state: ProgressState) -> None:
        self.state = state
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflights.clear()

    def maybe_update(self, index: int) -> bool:
        """Record an ack up to ``index``; returns whether ``match`` advanced."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        while self.inflights and self.inflights[0] <= index:
            self.inflights.popleft()
        return updated

    def sent_entries(self, last_index: int) -> None:
        """Note an AppendEntries whose last entry is ``last_index`` went out."""
        if self.state is ProgressState.REPLICATE:
            if last_index >= self.next:
                self.next = last_index + 1
                self.inflights.append(last_index)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True

    def maybe_decrease_to(self, rejected: int, hint: int) -> bool:
        """Handle a rejection of the append at ``rejected``; False if it is stale.

        ``hint`` is the follower's last index; the next probe starts no later
        than ``hint + 1`` and never at or below ``match``.
        """
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, hint + 1), self.match + 1, 1)
        self.probe_sent = False
        return True

    def lost_entries(self, last_index: int) -> None:
        """The follower's log ends at ``last_index``, below ``match``: it lost entries
        it had acknowledged (its state was wiped). Start again from what it has."""
        self.match = last_index
        self.next = last_index + 1
        self._reset(ProgressState.PROBE)

    def is_paused(self) -> bool:
        """Whether the leader must not send appends to this peer right now."""
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return len(self.inflights) >= self.max_inflight
        return True

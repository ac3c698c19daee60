"""Membership-change rules of the core: which changes are allowed, who has left, who has joined.

Theory of operation (dissertation chapter 4): the cluster changes its
configuration one server at a time (4.1); a configuration is used as soon as
its CONFIG entry is appended, so the leader stops counting a removed server at
once. Three questions around that rule live here, as pure code the core calls:

* :func:`check_single_server_change` -- is a requested configuration one
  single-server change away from the current one?
* :class:`LeavingTracker` -- which removed servers does the leader still
  replicate to, so that they learn of their removal? A server removed by a
  configuration must see that configuration *committed* to know it is out
  (before that, the change may still be undone). The leader therefore keeps
  sending it the log and heartbeats (which carry the commit index) for a
  grace period after the removal commits, then forgets it. A server that
  missed all of it (it was down) finds the leader later through its vote
  requests (see ``RaftCore``).
* :func:`became_voter_after` -- has a joining node (a new member, or a
  replica whose state was wiped) been made a voter by a configuration change
  appended after it joined? Until then it must not vote: a wiped replica has
  forgotten which votes it cast and which entries it acknowledged.
"""

from __future__ import annotations

import attrs

from cellmesh.consensus.errors import InvalidConfigChange
from cellmesh.consensus.log import RaftLog
from cellmesh.consensus.types import Membership


def check_single_server_change(current: Membership, new: Membership) -> None:
    """Raise :class:`InvalidConfigChange` unless ``new`` is one single-server change away.

    Allowed (dissertation 4.1): add or remove one voter, and any change of
    learners (promoting a learner adds a voter). The cluster keeps at least
    one voter; ids are positive; no id is both voter and learner.
    """
    if new.voters & new.learners:
        raise InvalidConfigChange("a node cannot be both voter and learner")
    if not new.voters:
        raise InvalidConfigChange("the cluster needs at least one voter")
    if len(current.voters ^ new.voters) > 1:
        raise InvalidConfigChange("only one voter may be added or removed at a time")
    if any(n <= 0 for n in new.members):
        raise InvalidConfigChange("node ids must be positive")


@attrs.define(eq=False)
class LeavingTracker:
    """The leader's list of removed servers it still replicates to (see the module docstring).

    ``grace_ticks``: how long, once the removing configuration is committed,
    the leader keeps a removed server. ``max_nodes`` bounds the list, since
    servers outside the configuration can announce themselves (a hostile or
    confused peer must not grow the leader's state).
    """

    grace_ticks: int
    max_nodes: int = 16
    _removed_at: dict[int, int] = attrs.Factory(dict)
    _ticks_left: dict[int, int] = attrs.Factory(dict)

    def add(self, node: int, config_index: int) -> bool:
        """Track ``node``, removed by the CONFIG entry at ``config_index``; False if full."""
        if node not in self._removed_at and len(self._removed_at) >= self.max_nodes:
            return False
        self._removed_at[node] = config_index
        self._ticks_left.pop(node, None)
        return True

    def discard(self, node: int) -> None:
        """Stop tracking ``node`` (it is a member again)."""
        self._removed_at.pop(node, None)
        self._ticks_left.pop(node, None)

    def clear(self) -> None:
        """Forget everything (leadership lost)."""
        self._removed_at.clear()
        self._ticks_left.clear()

    def __contains__(self, node: object) -> bool:
        return node in self._removed_at

    def tick(self, committed: int) -> list[int]:
        """One tick passed with commit index ``committed``; return the servers to forget."""
        done = []
        for node, index in self._removed_at.items():
            if committed < index:
                continue
            left = self._ticks_left.get(node, self.grace_ticks) - 1
            self._ticks_left[node] = left
            if left <= 0:
                done.append(node)
        for node in done:
            self.discard(node)
        return done


def became_voter_after(log: RaftLog, node: int, floor: int) -> bool:
    """Whether a committed CONFIG entry above index ``floor`` turned ``node`` into a voter.

    A *transition* is required: the configuration before that entry did not
    count ``node`` as a voter. A node that was a voter all along (a replica
    wiped without first being removed from the cluster) does not qualify.
    Returns False when the configuration at ``floor`` was compacted away
    (it cannot be told), which only delays the node.
    """
    if floor < log.snapshot.meta.index:
        return False
    previous = log.membership_at(floor)
    for index in log.config_indexes_between(floor, log.committed):
        current = log.membership_at(index)
        if node in current.voters and node not in previous.voters:
            return True
        previous = current
    return False


__all__ = ["LeavingTracker", "became_voter_after", "check_single_server_change"]

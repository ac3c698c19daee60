"""Errors raised by the Raft core, split by who is to blame.

All derive from :class:`ConsensusError`, itself a
:class:`cellmesh.errors.CellmeshError`. Each error carries its facts as
attributes (for example :attr:`NotLeader.leader_hint`); callers must never
classify them by message text.

* :class:`NotLeader` -- the request needs the leader and this node is not it.
  Retry at ``leader_hint`` (which may be ``None`` when no leader is known).
* :class:`NodeRemoved` (a :class:`NotLeader`) -- this node knows that a
  committed configuration no longer includes it: it serves nothing. Go to
  ``leader_hint`` or another member; the operator may stop the node.
* :class:`ProposalDropped` -- the proposal is **definitely not** applied, and
  never will be: it was refused before anything was appended (a leadership
  transfer is in progress), or a different entry was committed at its index.
  Retrying is safe.
* :class:`ProposalOutcomeUnknown` -- the proposal was appended to the log but
  this node can no longer tell whether it will commit: leadership was lost
  before it committed, a snapshot replaced the log around it, or the node
  stopped. It may or may not be applied; retry only if the command is
  idempotent (client sessions make it so).
* :class:`ConfigChangeInProgress` -- a membership change is still uncommitted,
  or the node's driver is still carrying one out (a learner catching up);
  only one change may be in flight (dissertation section 4.1).
* :class:`CatchUpFailed` -- a new server did not catch up with the log in time
  to be promoted from learner to voter; it stays a learner.
* :class:`InvalidConfigChange` -- the requested membership is not reachable by
  a single-server change, or is malformed. The caller's fault.
* :class:`ConsensusUsageError` -- the driver broke the core's calling contract
  (for example called ``ready()`` twice without ``advance()``). A local bug.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cellmesh.errors import CellmeshError

if TYPE_CHECKING:
    from cellmesh.consensus.types import PendingChange


class ConsensusError(CellmeshError):
    """Root of every error the Raft core raises on purpose."""


class NotLeader(ConsensusError):
    """The operation needs the leader; this node is not the leader.

    ``leader_hint`` is the id of the leader this node last heard from in its
    current term, or ``None`` if it knows of none.
    """

    def __init__(self, leader_hint: int | None) -> None:
        hint = "unknown" if leader_hint is None else str(leader_hint)
        super().__init__(f"not the leader (leader hint: {hint})")
        self.leader_hint = leader_hint


class NodeRemoved(NotLeader):
    """This node is not in the committed configuration any more (it was removed).

    ``leader_hint`` is the last leader it heard from, if any. A subclass of
    :class:`NotLeader` so that code that redirects on ``NotLeader`` keeps
    working, yet distinct: the node will not become leader again unless the
    cluster adds it back.
    """

    def __init__(self, node: int, leader_hint: int | None) -> None:
        super().__init__(leader_hint)
        hint = "unknown" if leader_hint is None else str(leader_hint)
        self.args = (f"node {node} was removed from the cluster (leader hint: {hint})",)
        self.node = node


class ProposalDropped(ConsensusError):
    """The proposal is definitely not applied (and never will be); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"proposal dropped: {reason}")
        self.reason = reason


class ProposalOutcomeUnknown(ConsensusError):
    """The proposal was appended at ``index`` but its fate is unknown here.

    It may still be committed (and applied) by the rest of the cluster, or
    it may be overwritten. ``reason`` says why this node cannot tell:
    leadership was lost before the entry committed, a snapshot replaced the
    log around it, or the node stopped. Retry only if the command is
    idempotent.
    """

    def __init__(self, index: int, reason: str = "covered by a snapshot") -> None:
        super().__init__(f"proposal at index {index}: outcome unknown ({reason})")
        self.index = index
        self.reason = reason


class ConfigChangeInProgress(ConsensusError):
    """Another membership change is in progress; only one may be (dissertation 4.1).

    ``pending_index`` is the index of the uncommitted CONFIG entry (0 if the
    log holds none); ``pending`` is the change the node's driver is carrying
    out, if any (an ``add_server`` whose learner is still catching up).
    """

    def __init__(self, pending_index: int, pending: PendingChange | None = None) -> None:
        if pending is not None:
            what = f"{pending.kind} node {pending.node} is in progress ({pending.phase})"
        else:
            what = f"membership change at index {pending_index} is not committed yet"
        super().__init__(what)
        self.pending_index = pending_index
        self.pending = pending


class CatchUpFailed(ConsensusError):
    """Learner ``node`` did not catch up with the leader's log; it was not promoted.

    ``problem`` says how (too slow: a round never took less than an election
    timeout; or no progress at all: it is down or unreachable). The node
    stays a learner; retry ``add_server`` or remove it.
    """

    def __init__(self, node: int, problem: str) -> None:
        super().__init__(f"node {node} did not catch up with the log: {problem}")
        self.node = node
        self.problem = problem


class InvalidConfigChange(ConsensusError, ValueError):
    """The requested membership cannot be reached by one single-server change."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"invalid membership change: {problem}")
        self.problem = problem


class ConsensusUsageError(ConsensusError):
    """The driver broke the core's calling contract (a local programming error)."""


class RestoredLogInvalid(ConsensusUsageError):
    """The durable state given to the core is no log a Raft node writes: entries
    with a gap, terms that go down, a configuration entry that holds no
    membership. ``open_raft_node`` reports it as the storage's corruption
    (``WalCorrupted`` naming the directory)."""


__all__ = [
    "CatchUpFailed",
    "ConfigChangeInProgress",
    "ConsensusError",
    "ConsensusUsageError",
    "RestoredLogInvalid",
    "InvalidConfigChange",
    "NodeRemoved",
    "NotLeader",
    "ProposalDropped",
    "ProposalOutcomeUnknown",
]

"""Errors raised by the Raft core, split by who is to blame.

All derive from :class:`ConsensusError`, itself a
:class:`cellmesh.errors.CellmeshError`. Each error carries its facts as
attributes (for example :attr:`NotLeader.leader_hint`); callers must never
classify them by message text.

* :class:`NotLeader` -- the request needs the leader and this node is not it.
  Retry at ``leader_hint`` (which may be ``None`` when no leader is known).
* :class:`ProposalDropped` -- the leader refused the proposal for a transient
  reason (a leadership transfer is in progress). Retrying later is safe.
* :class:`ConfigChangeInProgress` -- a membership change is still uncommitted;
  only one change may be in flight (dissertation section 4.1).
* :class:`InvalidConfigChange` -- the requested membership is not reachable by
  a single-server change, or is malformed. The caller's fault.
* :class:`ConsensusUsageError` -- the driver broke the core's calling contract
  (for example called ``ready()`` twice without ``advance()``). A local bug.
"""

from __future__ import annotations

from cellmesh.errors import CellmeshError


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


class ProposalDropped(ConsensusError):
    """The leader refused a proposal for a transient reason named in ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"proposal dropped: {reason}")
        self.reason = reason


class ConfigChangeInProgress(ConsensusError):
    """A membership change at ``pending_index`` is not committed yet."""

    def __init__(self, pending_index: int) -> None:
        super().__init__(f"membership change at index {pending_index} is not committed yet")
        self.pending_index = pending_index


class InvalidConfigChange(ConsensusError, ValueError):
    """The requested membership cannot be reached by one single-server change."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"invalid membership change: {problem}")
        self.problem = problem


class ConsensusUsageError(ConsensusError):
    """The driver broke the core's calling contract (a local programming error)."""


__all__ = [
    "ConfigChangeInProgress",
    "ConsensusError",
    "ConsensusUsageError",
    "InvalidConfigChange",
    "NotLeader",
    "ProposalDropped",
]

"""The proteins a replica serves on its peer socket: admin requests and forwarded commands.

Theory of operation
-------------------
Every replica of a replicated cell serves, on its *peer* socket (never the
group's client socket), three kinds of traffic:

* Raft messages between replicas (``cellmesh.raft.Packet`` signals,
  :mod:`cellmesh.consensus.membrane_transport`);
* commands a follower forwards to the leader (:class:`Forward`, answered
  with :class:`Forwarded`, or :class:`ForwardRefused` carrying the leader
  hint when the receiver does not lead);
* admin requests from the root (the replica contract): :class:`AddReplica`,
  :class:`RemoveReplica`, :class:`TransferLeadership` (answered with
  :class:`AdminDone` or :class:`AdminRefused`), :class:`ReplicaStatusRequest`
  (answered with :class:`~cellmesh.actors.control.ReplicaStats`) and
  :class:`StateDigestRequest` (answered with :class:`StateDigest`: tests
  compare replicas with it) and :class:`ReplicaProgressRequest` (the
  leader's match index of one replica, answered with :class:`ReplicaProgress`:
  a hot swap checks with it that a restarted replica caught up).

Replica ids are the operator's ids (0, 1, 2, ...), never Raft node ids.
"""

from __future__ import annotations

from typing import Final

from ..wire.proteins import protein

#: ``AdminRefused.code`` values.
NOT_LEADER: Final = "not_leader"
IN_PROGRESS: Final = "in_progress"
INVALID: Final = "invalid"
FAILED: Final = "failed"


@protein("cellmesh.replica.AddReplica")
class AddReplica:
    """Add replica ``id`` (peer socket ``path``, as seen inside the replicas' sandboxes).

    The leader records the path in the log, adds the replica as a learner,
    waits until it has caught up, then promotes it to voter; the answer
    (:class:`AdminDone`) comes once it is a voter.
    """

    id: int
    path: str


@protein("cellmesh.replica.RemoveReplica")
class RemoveReplica:
    """Remove replica ``id`` from the group (answered once the change is applied here)."""

    id: int


@protein("cellmesh.replica.TransferLeadership")
class TransferLeadership:
    """Hand leadership to voter ``to`` (None: the most up-to-date other voter).

    Answered once ``to`` leads (or, for None, once another voter does).
    """

    to: int | None


@protein("cellmesh.replica.StatusRequest")
class ReplicaStatusRequest:
    """Ask a replica for its :class:`~cellmesh.actors.control.ReplicaStats`."""


@protein("cellmesh.replica.ProgressRequest")
class ReplicaProgressRequest:
    """Ask the leader how much of its log replica ``id`` holds (a hot swap's catch-up check).

    Answered with :class:`ReplicaProgress` by the leader, ``AdminRefused``
    (``not_leader``, with the hint) by any other replica.
    """

    id: int


@protein("cellmesh.replica.Progress")
class ReplicaProgress:
    """The leader's view of replica ``replica``: ``match`` is the highest index the leader
    knows it holds (-1: not tracked), ``commit`` the leader's commit index."""

    replica: int
    match: int
    commit: int


@protein("cellmesh.replica.StateDigestRequest")
class StateDigestRequest:
    """Ask a replica for the digest of its replicated state."""


@protein("cellmesh.replica.StateDigest")
class StateDigest:
    """SHA-256 (hex) of the replica's snapshot bytes, taken at ``applied_index``."""

    replica: int
    applied_index: int
    sha256: str
    size: int


@protein("cellmesh.replica.AdminDone")
class AdminDone:
    """An admin request succeeded; ``detail`` says what was done."""

    detail: str


@protein("cellmesh.replica.AdminRefused")
class AdminRefused:
    """An admin request was refused: ``code`` is ``not_leader`` (retry at ``leader``),
    ``in_progress`` (another membership change runs), ``invalid`` or ``failed``."""

    code: str
    reason: str
    leader: int | None


@protein("cellmesh.replica.Forward")
class Forward:
    """A follower hands one operation (an encoded log op) to the leader."""

    op: bytes


@protein("cellmesh.replica.Forwarded")
class Forwarded:
    """The leader applied the forwarded op; ``result`` is its encoded result."""

    result: bytes


@protein("cellmesh.replica.ForwardRefused")
class ForwardRefused:
    """The receiver does not lead; ``leader`` is the replica it believes does (or None)."""

    leader: int | None


__all__ = [
    "FAILED",
    "INVALID",
    "IN_PROGRESS",
    "NOT_LEADER",
    "AddReplica",
    "AdminDone",
    "AdminRefused",
    "Forward",
    "ForwardRefused",
    "Forwarded",
    "RemoveReplica",
    "ReplicaProgress",
    "ReplicaProgressRequest",
    "ReplicaStatusRequest",
    "StateDigest",
    "StateDigestRequest",
    "TransferLeadership",
]

"""The messages Raft peers exchange: one frozen value type for every kind.

Theory of operation: like etcd's ``raftpb.Message``, a single flat record
carries every RPC of the paper; ``type`` says which fields are meaningful.
Keeping one shape makes the simulator, the codec and the driver trivial:
they route on ``dst`` and never need to know the kinds.

Field use per kind (all carry ``src``, ``dst`` and the sender's ``term``):

* ``APPEND`` (AppendEntries, section 5.3): ``index``/``log_term`` are the
  position before ``entries``; ``commit`` the leader's commit index.
* ``APPEND_RESP``: ``index`` is the follower's last matching index on success;
  on ``reject`` it echoes the rejected ``index``; ``reject_hint`` is the last
  follower index whose term is <= the rejected ``log_term`` and ``log_term``
  is the term there (so the leader can skip a conflicting term at once).
* ``HEARTBEAT``/``HEARTBEAT_RESP``: ``commit`` (clamped to what the follower is
  known to hold) and ``read_seq``, echoed back to confirm leadership for
  ReadIndex (section 6.4).
* ``VOTE``/``PRE_VOTE`` (RequestVote, section 5.2; pre-vote, dissertation
  9.6): ``index``/``log_term`` are the candidate's last log position;
  ``transfer`` marks an election started by TimeoutNow (it may disturb a lease).
* ``VOTE_RESP``/``PRE_VOTE_RESP``: ``reject`` tells whether the vote was denied.
* ``SNAPSHOT`` (InstallSnapshot, section 7): ``snapshot``.
* ``TIMEOUT_NOW`` (leadership transfer, dissertation 3.10): start an election now.
* ``READ_INDEX``/``READ_INDEX_RESP``: a follower forwards a read to the leader;
  the reply's ``index`` is the read index and ``context`` the reader's token.
"""

from __future__ import annotations

import enum

import attrs

from cellmesh.consensus.types import Entry, EntryKind, Membership, Snapshot


class MessageType(enum.IntEnum):
    """Which Raft RPC a :class:`Message` carries. Values are stable wire numbers."""

    APPEND = 1
    APPEND_RESP = 2
    HEARTBEAT = 3
    HEARTBEAT_RESP = 4
    VOTE = 5
    VOTE_RESP = 6
    PRE_VOTE = 7
    PRE_VOTE_RESP = 8
    SNAPSHOT = 9
    TIMEOUT_NOW = 10
    READ_INDEX = 11
    READ_INDEX_RESP = 12


@attrs.frozen(kw_only=True)
class Message:
    """One Raft message from ``src`` to ``dst``; see the module docstring for fields."""

    type: MessageType
    src: int
    dst: int
    term: int
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: Snapshot | None = None
    read_seq: int = 0
    context: bytes = b""
    transfer: bool = False


RESPONSE_TYPES: frozenset[MessageType] = frozenset(
    {
        MessageType.APPEND_RESP,
        MessageType.HEARTBEAT_RESP,
        MessageType.VOTE_RESP,
        MessageType.PRE_VOTE_RESP,
        MessageType.READ_INDEX_RESP,
    }
)


def well_formed(m: Message) -> bool:
    """Whether ``m`` is internally consistent enough to be processed.

    Checks what the core relies on: non-negative positions, and for appends
    that the entries directly follow ``index``, with non-decreasing terms no
    newer than the message's term, and that every configuration entry holds a
    membership with at least one voter; a snapshot message must carry a
    snapshot whose membership has a voter.
    """
    if m.term < 0 or m.index < 0 or m.log_term < 0 or m.commit < 0:
        return False
    if m.type is MessageType.APPEND:
        prev_term = m.log_term
        for k, e in enumerate(m.entries):
            if e.index != m.index + k + 1 or e.term < prev_term or e.term > m.term:
                return False
            if e.kind is EntryKind.CONFIG and not _membership_ok(e.data):
                return False
            prev_term = e.term
    elif m.type is MessageType.SNAPSHOT:
        snap = m.snapshot
        return (
            snap is not None
            and 0 <= snap.meta.term <= m.term
            and snap.meta.index >= 0
            and bool(snap.meta.voters)
            and not snap.meta.voters & snap.meta.learners
        )
    return True


def _membership_ok(data: bytes) -> bool:
    """Whether ``data`` decodes to a membership a cluster can run with."""
    try:
        Membership.decode_runnable(data)
    except ValueError:
        return False
    return True

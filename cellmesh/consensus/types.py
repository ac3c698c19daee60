"""Value types shared by the Raft core, the write-ahead log and the driver.

These are the contract between :mod:`cellmesh.consensus.core` (pure),
:mod:`cellmesh.consensus.wal` (sync disk I/O) and the Trio driver. They are
frozen attrs values; nothing here does I/O.

Besides the log types (:class:`Entry`, :class:`HardState`, :class:`Snapshot`)
this module defines :class:`Membership` (voters + learners, the payload of a
CONFIG entry), :class:`Role`, :class:`SoftState` and :class:`ReadState`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Final, Literal

import attrs


class EntryKind(enum.IntEnum):
    """What a log entry carries."""

    NORMAL = 0  #: an opaque state-machine command (``data``)
    CONFIG = 1  #: a membership change (``data`` is an encoded configuration)
    NOOP = 2  #: the empty entry a new leader appends in its term (Raft section 8)


@attrs.frozen(kw_only=True)
class Entry:
    """One log entry. ``index`` starts at 1; ``term`` >= 1."""

    index: int
    term: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""


def _slot_setter(name: str) -> Callable[[Entry, object], None]:
    setter: Callable[[Entry, object], None] = Entry.__dict__[name].__set__
    return setter


_NEW_OBJECT: Final = object.__new__
_SET_INDEX: Final = _slot_setter("index")
_SET_TERM: Final = _slot_setter("term")
_SET_KIND: Final = _slot_setter("kind")
_SET_DATA: Final = _slot_setter("data")


def make_entry(index: int, term: int, kind: EntryKind, data: bytes) -> Entry:
    """``Entry(index=..., term=..., kind=..., data=...)``, built about 2.5x faster.

    For decoders that build many entries (WAL recovery): it fills the slots
    directly instead of going through attrs' frozen ``__init__``. That is the
    same object only because :class:`Entry` has no validators, converters or
    ``__attrs_post_init__`` (tests/consensus/test_types.py checks it); the
    caller passes values of the right types, as it would to the constructor.
    """
    entry: Entry = _NEW_OBJECT(Entry)
    _SET_INDEX(entry, index)
    _SET_TERM(entry, term)
    _SET_KIND(entry, kind)
    _SET_DATA(entry, data)
    return entry


@attrs.frozen(kw_only=True)
class HardState:
    """The state Raft must make durable before revealing it (Figure 2 "persistent state").

    ``commit`` is persisted as a hint for faster restart; safety never depends on it.
    """

    term: int = 0
    vote: int | None = None
    commit: int = 0


@attrs.frozen(kw_only=True)
class SnapshotMeta:
    """Identifies a snapshot: the last log position it covers and the membership then."""

    index: int
    term: int
    voters: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()


@attrs.frozen(kw_only=True)
class Snapshot:
    """A state-machine snapshot: its position plus the opaque serialized state."""

    meta: SnapshotMeta
    data: bytes = b""


class Role(enum.IntEnum):
    """The role a Raft node currently plays (Figure 4 of the paper, plus pre-candidate
    and removed)."""

    FOLLOWER = 0
    PRE_CANDIDATE = 1  #: running a pre-vote (dissertation section 9.6); term unchanged
    CANDIDATE = 2
    LEADER = 3
    #: A former member that knows a committed configuration no longer includes it:
    #: it never campaigns or votes and refuses client requests with ``NodeRemoved``;
    #: it still accepts the log from a leader, so a configuration that adds it back
    #: makes it a follower again.
    REMOVED = 4


@attrs.frozen(kw_only=True)
class JoinState:
    """The durable joining state of a node that started with an empty log to join a cluster.

    A *joining* node -- a new member started with ``join=True``, or a replica
    whose state was wiped (:func:`cellmesh.consensus.wipe_replica`) -- takes
    no bootstrap membership, never campaigns and never grants a vote until a
    committed configuration change appended **after it joined** makes it a
    voter (the learner-first promotion that ``RaftNode.add_server`` performs).
    A wiped replica has forgotten the votes it cast and the entries it
    acknowledged; voting before the cluster re-admitted it could elect a
    leader missing a committed entry, or vote twice in one term.

    ``floor``: the leader's commit index when this node first accepted the
    log (``None`` until then); a configuration entry above it was appended
    after the node joined. ``done``: the node was made a voter and now acts
    as an ordinary member.
    """

    floor: int | None = None
    done: bool = False


@attrs.frozen(kw_only=True)
class PendingChange:
    """A membership change a node's driver is carrying out (``RaftNode.add_server`` /
    ``remove_server``): which ``node`` is being added or removed, and the current
    ``phase`` in words (for example ``"catching up: round 2 of 10"``)."""

    kind: Literal["add", "remove"]
    node: int
    phase: str


@attrs.frozen(kw_only=True)
class SoftState:
    """Volatile state the driver may want to observe; never persisted."""

    leader: int | None
    role: Role


@attrs.frozen(kw_only=True)
class ReadState:
    """A linearizable read may be served once the state machine applied ``index``.

    ``context`` is the opaque value the reader passed to ``read_index``.
    """

    index: int
    context: bytes


_VOTERS_TAG: bytes = b"v="
_LEARNERS_TAG: bytes = b"l="


def _encode_ids(ids: frozenset[int]) -> bytes:
    return ",".join(str(i) for i in sorted(ids)).encode("ascii")


def _decode_ids(raw: bytes) -> frozenset[int]:
    if not raw:
        return frozenset()
    out: set[int] = set()
    for part in raw.split(b","):
        if not part.isdigit():
            raise ValueError(f"bad node id {part!r} in membership")
        out.add(int(part))
    return frozenset(out)


@attrs.frozen(kw_only=True)
class Membership:
    """A cluster configuration: voting members and non-voting learners.

    Invariant: ``voters`` and ``learners`` are disjoint. Encoded as the
    ``data`` of a :attr:`EntryKind.CONFIG` entry with :meth:`encode`.
    """

    voters: frozenset[int]
    learners: frozenset[int] = frozenset()

    def encode(self) -> bytes:
        """Serialize to the compact ASCII form ``v=1,2,3;l=4``."""
        return (
            _VOTERS_TAG
            + _encode_ids(self.voters)
            + b";"
            + _LEARNERS_TAG
            + _encode_ids(self.learners)
        )

    @classmethod
    def decode(cls, raw: bytes) -> Membership:
        """Parse :meth:`encode` output; raises ``ValueError`` on anything else."""
        parts = raw.split(b";")
        if (
            len(parts) != 2
            or not parts[0].startswith(_VOTERS_TAG)
            or not parts[1].startswith(_LEARNERS_TAG)
        ):
            raise ValueError(f"malformed membership {raw!r}")
        voters = _decode_ids(parts[0][len(_VOTERS_TAG) :])
        learners = _decode_ids(parts[1][len(_LEARNERS_TAG) :])
        if voters & learners:
            raise ValueError(f"membership {raw!r} has ids that are both voter and learner")
        return cls(voters=voters, learners=learners)

    @classmethod
    def decode_runnable(cls, raw: bytes) -> Membership:
        """:meth:`decode`, also refusing a membership with no voter (no cluster
        can run with one: nothing could ever be committed). Raises ``ValueError``."""
        membership = cls.decode(raw)
        if not membership.voters:
            raise ValueError("it has no voter")
        return membership

    @classmethod
    def of_snapshot(cls, meta: SnapshotMeta) -> Membership:
        """The membership recorded in a snapshot's metadata."""
        return cls(voters=meta.voters, learners=meta.learners)

    @property
    def members(self) -> frozenset[int]:
        """Every node that receives the log: voters and learners."""
        return self.voters | self.learners

"""Replicated cells, the root's side: names, the group record, replica env, membership plans.

Theory of operation
-------------------
A cell declared with ``replicas = N`` is a Raft *group* of processes, the
*replicas* ``X/0``, ``X/1``, ... (docs/root.md, "Replicated cells"). This
module is the pure part of how the root runs one; the Trio driver is
:mod:`cellmesh.actors._replicas`. Nothing here does I/O: values in, values
(or a plan) out.

* **Names.** Replica ``i`` of group ``X`` is ``X/i`` for the operator
  (:func:`replica_name`, parsed back by :func:`parse_replica_name`) and
  ``X..i`` wherever a file or backend id needs a plain cell name
  (:func:`replica_stem`: its log, its events, its sandboxes). ``..`` never
  appears in a user's cell name, so a stem never collides with a cell.
* **The group record** (:class:`GroupRecord`, kept by the driver in
  ``$CELL_HOME/data/X/group.json``) is what the root must remember across
  its own restarts: the member ids, the next unused id (ids are never
  reused within the data directory's life), the initial voter set, whether
  the group has ever had a leader (``bootstrapped``), and which members
  are still joining. :meth:`GroupRecord.from_json` refuses anything odd
  with :class:`GroupRecordError` naming the problem.
* **Environment** (:func:`replica_env`): the ``CELL_REPLICA_*`` variables
  of the replica contract for one start of one replica. A replica with an
  empty data directory bootstraps only while the group has never had a
  leader; afterwards it joins (an amnesiac voter must not bootstrap again).
* **Membership plans** (:func:`next_step`): one server at a time. Growing
  adds the next unused id; shrinking removes the highest ids first, the
  leader last, after a leadership transfer. The driver executes one step,
  waits for it to take effect, and asks again (the leader may have changed
  meanwhile), so the plan is always made from fresh facts.
* **Views** (:class:`GroupView`): from the latest :class:`ReplicaStats` of
  each replica, the leader (the highest-term leader claim), its term, and
  each replica's lag (the leader's ``last_index`` minus the replica's
  ``applied_index``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, TypeAlias

import attrs

from .control import REPLICA_ROLES, ReplicaStats
from .errors import RootRequestError

#: Most ids a ``ReplicaStats`` may list in ``voters`` or ``learners``.
MAX_STATS_IDS: Final = 64
#: Most members a group record may hold (7 replicas, plus one being changed).
MAX_MEMBERS: Final = 16
#: Replica ids stay below this (so ``X..<id>`` stays a valid cell name).
MAX_REPLICA_ID: Final = 10**14 - 1
#: Roles of a replica that counts as a voter in its own view.
VOTER_ROLES: Final = ("leader", "follower", "candidate", "precandidate")
#: Version of the group record's JSON document.
RECORD_VERSION: Final = 1

_REPLICA_NAME: Final = re.compile(r"(?P<group>[^/]+)/(?P<id>0|[1-9][0-9]{0,13})")


# --------------------------------------------------------------------------
# Names


def replica_name(group: str, replica: int) -> str:
    """The operator's name of a replica: ``X/1``."""
    return f"{group}/{replica}"


def replica_names(group: str, replicas: Iterable[int]) -> str:
    """Several replicas' names for a message: ``X/1, X/3``."""
    return ", ".join(replica_name(group, i) for i in replicas)


def replica_stem(group: str, replica: int) -> str:
    """The replica's file and backend name: ``X..1`` (logs, events, sandboxes)."""
    return f"{group}..{replica}"


def parse_replica_name(text: str) -> tuple[str, int] | None:
    """``"X/1"`` -> ``("X", 1)``; None when ``text`` is not ``<group>/<id>``.

    The id is canonical decimal (no sign, no leading zero). The group part is
    not validated here (the caller checks it is a cell).
    """
    match = _REPLICA_NAME.fullmatch(text)
    if match is None:
        return None
    return match["group"], int(match["id"])


def majority(count: int) -> int:
    """Votes a group of ``count`` voters needs: ``count // 2 + 1``."""
    return count // 2 + 1


def quorum_gap(
    voters: Sequence[int], answering: Iterable[int], replica: int, *, stopped_first: bool,
) -> tuple[list[int], int] | None:
    """What keeps the group from committing ``replica``'s removal.

    ``voters`` is the leader's configuration (learners do not count). A
    removal takes effect when the leader appends it (single-server changes,
    dissertation 4.1), so it commits with a majority of the voters left.
    ``stopped_first`` (a wipe): ``replica`` stops before the removal is
    appended, so meanwhile the voters as they are now must keep a majority
    without it (a leader that hears from no majority steps down). Only the
    others that answer count. None: they are enough. Else ``(down, needed)``:
    the other voters that do not answer, and how many answering ones it takes.
    """
    up = set(answering)
    others = [v for v in voters if v != replica]
    needed = majority(len(voters) if stopped_first or replica not in voters else len(others))
    if sum(1 for v in others if v in up) >= needed:
        return None
    return [v for v in others if v not in up], needed


# --------------------------------------------------------------------------
# The group record


class GroupRecordError(RootRequestError):
    """The group record (``group.json``) is unreadable or inconsistent; ``source`` names it."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(source, problem)


@attrs.frozen(kw_only=True)
class GroupRecord:
    """What the root remembers of a group across its restarts (module doc).

    Invariants (checked by :meth:`from_json`, kept by the methods): ids are
    ``0 <= id < next_id``; ``members`` sorted and distinct; ``joining`` a
    subset of ``members``; ``initial`` the voter set the group was created
    with.
    """

    members: tuple[int, ...]
    next_id: int
    initial: tuple[int, ...]
    bootstrapped: bool = False
    joining: tuple[int, ...] = ()

    @classmethod
    def create(cls, count: int) -> GroupRecord:
        """A new group of ``count`` replicas ``0 .. count-1``, all initial voters."""
        ids = tuple(range(count))
        return cls(members=ids, next_id=count, initial=ids)

    def allocate(self) -> tuple[GroupRecord, int]:
        """A new joining member with the next unused id: (the record with it, the id)."""
        new = self.next_id
        if new > MAX_REPLICA_ID:
            raise GroupRecordError("group record", f"replica ids are exhausted ({new})")
        record = attrs.evolve(
            self, members=tuple(sorted((*self.members, new))), next_id=new + 1,
            joining=tuple(sorted((*self.joining, new))),
        )
        return record, new

    def joined(self, replica: int) -> GroupRecord:
        """``replica`` is a voter now."""
        return attrs.evolve(self, joining=tuple(i for i in self.joining if i != replica))

    def rejoining(self, replica: int) -> GroupRecord:
        """``replica`` (a member) starts over empty and must be added again (a wipe)."""
        return attrs.evolve(self, joining=tuple(sorted({*self.joining, replica})))

    def without(self, replica: int) -> GroupRecord:
        """``replica`` is no longer a member (its id stays used)."""
        return attrs.evolve(
            self, members=tuple(i for i in self.members if i != replica),
            joining=tuple(i for i in self.joining if i != replica),
        )

    def to_json(self) -> str:
        """The record as a JSON document (read back by :meth:`from_json`)."""
        return json.dumps({
            "version": RECORD_VERSION, "members": list(self.members), "next_id": self.next_id,
            "initial": list(self.initial), "bootstrapped": self.bootstrapped,
            "joining": list(self.joining),
        }, sort_keys=True) + "\n"  # fmt: skip

    @classmethod
    def from_json(cls, text: str, *, source: str) -> GroupRecord:
        """Parse and check a record; :class:`GroupRecordError` at ``source`` on any problem."""
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise GroupRecordError(source, f"is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise GroupRecordError(source, "is not a JSON object")
        if doc.get("version") != RECORD_VERSION:
            raise GroupRecordError(
                source, f"has version {doc.get('version')!r}; this root reads {RECORD_VERSION}"
            )
        next_id = doc.get("next_id")
        if type(next_id) is not int or not 0 < next_id <= MAX_REPLICA_ID + 1:
            raise GroupRecordError(source, f"next_id {next_id!r} is not a positive id")
        members = _ids(doc.get("members"), "members", source, next_id)
        initial = _ids(doc.get("initial"), "initial", source, next_id)
        joining = _ids(doc.get("joining", []), "joining", source, next_id)
        if not members:
            raise GroupRecordError(source, "has no members")
        if not set(joining) <= set(members):
            raise GroupRecordError(source, f"joining {list(joining)} are not all members")
        if not initial:
            raise GroupRecordError(source, "has no initial voters")
        bootstrapped = doc.get("bootstrapped")
        if not isinstance(bootstrapped, bool):
            raise GroupRecordError(source, f"bootstrapped {bootstrapped!r} is not a boolean")
        return cls(
            members=members, next_id=next_id, initial=initial, bootstrapped=bootstrapped,
            joining=joining,
        )


def _ids(value: object, field: str, source: str, next_id: int) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > MAX_MEMBERS:
        raise GroupRecordError(source, f"{field} is not a list of at most {MAX_MEMBERS} ids")
    if any(type(i) is not int or not 0 <= i < next_id for i in value):
        raise GroupRecordError(source, f"{field} {value!r} holds an id outside 0..{next_id - 1}")
    if len(set(value)) != len(value):
        raise GroupRecordError(source, f"{field} {value!r} lists an id twice")
    return tuple(sorted(value))


# --------------------------------------------------------------------------
# Environment


def replica_env(
    replica: int,
    record: GroupRecord,
    peer_paths: Mapping[int, str],
    *,
    data_empty: bool,
) -> dict[str, str]:
    """The ``CELL_REPLICA_*`` variables for one start of ``replica`` (replica contract).

    ``peer_paths`` maps every member to its peer socket as seen inside the
    replica. A joining member gets ``CELL_REPLICA_JOIN=1``; so does any
    member whose data is empty once the group has had a leader (``data_empty``):
    bootstrapping again would forget its votes. Otherwise an initial member
    gets ``CELL_REPLICA_BOOTSTRAP`` (used by the runtime only when its data
    directory is empty: before the group's first leader).
    """
    env = {
        "CELL_REPLICA_ID": str(replica),
        "CELL_REPLICA_PEERS": ",".join(f"{i}={peer_paths[i]}" for i in record.members),
    }
    if replica in record.joining or (record.bootstrapped and data_empty):
        env["CELL_REPLICA_JOIN"] = "1"
    elif replica in record.initial:
        # Used by the runtime only while its data directory is empty, which,
        # past the group's first leader, is the JOIN case above. Kept for a
        # replica with data so its env (and its standby) stays the same.
        env["CELL_REPLICA_BOOTSTRAP"] = ",".join(map(str, record.initial))
    elif not record.bootstrapped:
        env["CELL_REPLICA_JOIN"] = "1"  # no leader has added it yet: it waits to be added
    return env


# --------------------------------------------------------------------------
# Stats and the group view


def stats_problem(stats: ReplicaStats, replica: int) -> str | None:
    """Why ``stats`` from replica ``replica``'s umbilical must be dropped (None: it is fine)."""
    if stats.replica != replica:
        return f"claims to be replica {stats.replica}"
    if stats.role not in REPLICA_ROLES:
        return f"unknown role {stats.role[:40]!r}"
    if len(stats.voters) > MAX_STATS_IDS or len(stats.learners) > MAX_STATS_IDS:
        return f"lists more than {MAX_STATS_IDS} ids"
    values = (stats.term, stats.commit_index, stats.applied_index, stats.last_index)
    ids = (*stats.voters, *stats.learners, *(() if stats.leader is None else (stats.leader,)))
    if any(v < 0 for v in values) or any(i < 0 for i in ids):
        return "negative term, index or id"
    if any(v > _MAX_STAT for v in values) or any(i > _MAX_STAT for i in ids):
        # No Raft node gets there; such a number broke every metrics scrape
        # (the Prometheus client cannot turn it into a float).
        return "term, index or id beyond 2**63-1"
    return None


_MAX_STAT = (1 << 63) - 1


def is_voter(stats: ReplicaStats | None) -> bool:
    """The replica reports itself a voting member of its configuration."""
    return stats is not None and stats.role in VOTER_ROLES and stats.replica in stats.voters


@attrs.define
class PromotionCheck:
    """Whether joining replica ``replica`` votes in the group's configuration (a wipe, a grow).

    A replica's own word is not enough. One rebuilt from an empty log
    replays the group's history, and for a while its own view is a
    configuration the group has left: the first one, where it was a voter
    before it was wiped and removed. Its stats are also whatever its
    sandbox sends. So a joiner counts as a voter only once all of these hold:

    * the leader's configuration lists it among the voters;
    * it has applied the leader's log up to where the leader's log ended
      when that was first seen under the current leader's term (so the
      promotion is committed and in its own log);
    * it says it is a voter.

    Call it with the group's latest stats (:meth:`Group.stats`) at every
    change. It keeps the mark between calls and forgets it whenever the
    leader's configuration stops listing the replica or the leader's term
    changes.
    """

    replica: int
    _mark: tuple[int, int] | None = None  # (leader's term, leader's last index) when first seen

    def __call__(self, stats: Mapping[int, ReplicaStats]) -> bool:
        view = GroupView.of(stats.values())
        voters, _ = view.config(stats)
        if self.replica not in voters or view.term is None or view.leader_last_index is None:
            self._mark = None
            return False
        if self._mark is None or self._mark[0] != view.term:
            self._mark = (view.term, view.leader_last_index)
        own = stats.get(self.replica)
        return own is not None and is_voter(own) and own.applied_index >= self._mark[1]


@attrs.frozen(kw_only=True)
class GroupView:
    """The group as its replicas' latest stats show it (module doc)."""

    leader: int | None
    term: int | None
    leader_last_index: int | None

    @classmethod
    def of(cls, stats: Iterable[ReplicaStats]) -> GroupView:
        """The highest-term leader claim among ``stats`` (a deposed leader's is older)."""
        best: ReplicaStats | None = None
        for s in stats:
            if s.role == "leader" and (best is None or s.term > best.term):
                best = s
        if best is None:
            return cls(leader=None, term=None, leader_last_index=None)
        return cls(leader=best.replica, term=best.term, leader_last_index=best.last_index)

    def lag(self, stats: ReplicaStats | None) -> int | None:
        """Entries ``stats``' replica has yet to apply of the leader's log (None: unknown)."""
        if stats is None or self.leader_last_index is None:
            return None
        return max(0, self.leader_last_index - stats.applied_index)

    def config(self, stats: Mapping[int, ReplicaStats]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The leader's ``(voters, learners)``; ``((), ())`` without a known leader."""
        if self.leader is None or self.leader not in stats:
            return (), ()
        s = stats[self.leader]
        return tuple(sorted(s.voters)), tuple(sorted(s.learners))


# --------------------------------------------------------------------------
# Membership plans


@attrs.frozen(kw_only=True)
class AddMember:
    """Allocate the next id, start it joining, have the leader add it; wait until it votes."""


@attrs.frozen(kw_only=True)
class RemoveMember:
    """Have the leader remove ``replica``; once the configuration excludes it, stop it."""

    replica: int


@attrs.frozen(kw_only=True)
class TransferLeadership:
    """Ask the leader ``leader`` to hand over (it is about to be removed); wait for another."""

    leader: int


Step: TypeAlias = AddMember | RemoveMember | TransferLeadership


def check_count(count: int) -> None:
    """A replica count must be odd, 1 to 7 (:class:`RootRequestError` otherwise)."""
    if isinstance(count, bool) or not isinstance(count, int) or not (
        1 <= count <= 7 and count % 2 == 1
    ):
        raise RootRequestError("replicas", f"expected an odd number from 1 to 7, got {count!r}")


def next_step(members: Sequence[int], target: int, leader: int | None) -> Step | None:
    """The next single-server step from ``members`` towards ``target`` replicas (None: done).

    Growing: :class:`AddMember`. Shrinking: remove the highest ids first; the
    leader, if it is among those to go, goes last, and only after a
    :class:`TransferLeadership`.
    """
    check_count(target)
    if len(members) < target:
        return AddMember()
    if len(members) == target:
        return None
    doomed = sorted(members)[target:]
    others = [i for i in reversed(doomed) if i != leader]
    if others:
        return RemoveMember(replica=others[0])
    assert leader is not None  # doomed == [leader]
    return TransferLeadership(leader=leader)


def replicas_text(count: int) -> str:
    """``1 replica``, ``3 replicas``."""
    return f"{count} replica" if count == 1 else f"{count} replicas"


def describe_change(old: int, new: int) -> str:
    """``3 -> 5`` (a human summary of a change of count)."""
    return f"{old} -> {new}"


__all__ = [
    "MAX_MEMBERS",
    "MAX_REPLICA_ID",
    "MAX_STATS_IDS",
    "RECORD_VERSION",
    "VOTER_ROLES",
    "AddMember",
    "GroupRecord",
    "GroupRecordError",
    "GroupView",
    "PromotionCheck",
    "RemoveMember",
    "Step",
    "TransferLeadership",
    "check_count",
    "describe_change",
    "replicas_text",
    "is_voter",
    "majority",
    "next_step",
    "parse_replica_name",
    "quorum_gap",
    "replica_env",
    "replica_name",
    "replica_names",
    "replica_stem",
    "stats_problem",
]

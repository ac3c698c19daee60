"""A replica's peer-socket services: forwarded commands and the root's admin requests.

Theory of operation
-------------------
:class:`PeerSide` answers, on the replica's peer socket:

* :class:`~cellmesh.actors.replicated_proteins.Forward` from a follower: the
  op is validated like any hostile input (a malformed op in the log would
  stop every replica), then submitted here without forwarding again; a
  replica that does not lead answers ``ForwardRefused`` with its hint.
* membership requests from the root (the replica contract), one at a time:
  ``AddReplica`` (address op in the log, then
  :meth:`~cellmesh.consensus.RaftNode.add_server`: learner, caught up in
  rounds, promoted: dissertation 4.2.1), ``RemoveReplica``
  (:meth:`~cellmesh.consensus.RaftNode.remove_server`),
  ``TransferLeadership`` (dissertation 3.10: to the voter named, or else to
  the most up-to-date other voter). A replica that does not lead
  refuses with ``AdminRefused(code="not_leader", leader=<hint>)``.
* ``ReplicaStatusRequest``, ``StateDigestRequest`` and, at the leader,
  ``ReplicaProgressRequest`` (a hot swap's proof that a restarted replica
  caught up: the leader's match index, not the replica's own word).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, Protocol

import attrs
import cbor2
import trio

from ..consensus import (
    CatchUpFailed,
    ConfigChangeInProgress,
    InvalidConfigChange,
    Membership,
    NotLeader,
    ProposalDropped,
    RaftNode,
    Role,
)
from ..errors import CellmeshError
from ..transport._dispatch import Handler
from ._replica_entries import address_op, decode_op
from ._replica_spec import MAX_REPLICA_ID, node_id, replica_id
from ._replica_submit import Refused, Router
from .control import ReplicaStats
from .replicated_proteins import (
    FAILED,
    IN_PROGRESS,
    INVALID,
    NOT_LEADER,
    AddReplica,
    AdminDone,
    AdminRefused,
    Forward,
    Forwarded,
    ForwardRefused,
    RemoveReplica,
    ReplicaProgress,
    ReplicaProgressRequest,
    ReplicaStatusRequest,
    StateDigest,
    StateDigestRequest,
    TransferLeadership,
)

#: Election timeouts to wait for a leadership transfer.
TRANSFER_ELECTIONS: Final = 4
_MAX_PATH: Final = 4096


def most_up_to_date(
    voters: Iterable[int],
    match_index: Callable[[int], int | None],
    heard_from: Callable[[int], bool],
) -> int:
    """The voter to hand leadership to: one the leader heard from lately before
    one it did not (a replica that is down cannot take over), then the one
    whose log the leader knows to be longest (its match index), then the
    lowest id."""
    return min(
        voters, key=lambda voter: (not heard_from(voter), -(match_index(voter) or 0), voter)
    )


class Replica(Protocol):
    """What the peer side needs from the running replica."""

    @property
    def replica(self) -> int:
        """This replica's id."""
        ...

    node: RaftNode
    router: Router
    election_timeout: float

    def stats(self) -> ReplicaStats:
        """The replica's current Raft view."""
        ...

    def snapshot(self) -> tuple[int, bytes]:
        """(applied index, replicated state bytes)."""
        ...

    def membership(self) -> Membership:
        """The configuration this replica has."""
        ...


def _refused(code: str, reason: str, leader: int | None = None) -> AdminRefused:
    return AdminRefused(code=code, reason=reason, leader=leader)


@attrs.define(eq=False)
class PeerSide:
    """The peer-socket handlers of one replica (see module docstring)."""

    replica: Replica
    on_packet: Handler
    _changing: str = ""

    def handlers(self, packet: type) -> dict[type, Handler]:
        """Protein type -> handler, for the peer membrane (``packet``: the Raft packet type)."""
        return {
            packet: self.on_packet,
            Forward: self.forward,
            AddReplica: self.add_replica,
            RemoveReplica: self.remove_replica,
            TransferLeadership: self.transfer_leadership,
            ReplicaStatusRequest: self.status,
            StateDigestRequest: self.digest,
            ReplicaProgressRequest: self.progress,
        }

    # -- forwarding ------------------------------------------------------------

    async def forward(self, msg: Forward) -> Forwarded | ForwardRefused:
        """Submit a follower's op here (the leader), never forwarding it again."""
        op = decode_op(bytes(msg.op))  # ValueError: the caller gets an error reply
        try:
            result = await self.replica.router.submit(op, may_forward=False)
        except Refused as exc:
            return ForwardRefused(leader=exc.leader)
        return Forwarded(result=cbor2.dumps(result))

    # -- status ----------------------------------------------------------------

    async def status(self, msg: ReplicaStatusRequest) -> ReplicaStats:
        """This replica's Raft view."""
        del msg
        return self.replica.stats()

    async def digest(self, msg: StateDigestRequest) -> StateDigest:
        """SHA-256 of this replica's replicated state, and where it was taken."""
        del msg
        index, data = self.replica.snapshot()
        return StateDigest(
            replica=self.replica.replica, applied_index=index,
            sha256=hashlib.sha256(data).hexdigest(), size=len(data),
        )

    async def progress(self, msg: ReplicaProgressRequest) -> ReplicaProgress | AdminRefused:
        """How much of this leader's log replica ``msg.id`` holds (the leader's match index)."""
        if not 0 <= msg.id <= MAX_REPLICA_ID:
            return _refused(INVALID, f"bad replica id {msg.id}")
        refusal = self._not_leader()
        if refusal is not None:
            return refusal
        node = self.replica.node
        status = node.status()
        target = node_id(msg.id)
        match = status.last_index if target == status.id else node.match_index(target)
        return ReplicaProgress(
            replica=msg.id, match=-1 if match is None else match, commit=status.commit
        )

    # -- membership --------------------------------------------------------------

    def _not_leader(self) -> AdminRefused | None:
        status = self.replica.node.status()
        if status.role is Role.LEADER:
            return None
        hint = None if status.leader is None else replica_id(status.leader)
        return _refused(NOT_LEADER, f"replica {self.replica.replica} does not lead", hint)

    async def _change(self, what: str, change: Callable[[], Awaitable[str]]) -> Any:
        refusal = self._not_leader()
        if refusal is not None:
            return refusal
        if self._changing:
            return _refused(IN_PROGRESS, f"a membership change is in progress: {self._changing}")
        self._changing = what
        try:
            return AdminDone(detail=await change())
        except ConfigChangeInProgress as exc:
            return _refused(IN_PROGRESS, str(exc))
        except InvalidConfigChange as exc:
            return _refused(INVALID, str(exc))
        except CatchUpFailed as exc:  # named by replica id, as the operator knows it
            return _refused(FAILED, f"replica {replica_id(exc.node)} did not catch up with "
                                    f"the log: {exc.problem}")
        except NotLeader as exc:
            hint = None if exc.leader_hint is None else replica_id(exc.leader_hint)
            return _refused(NOT_LEADER, str(exc), hint)
        except (ProposalDropped, Refused, CellmeshError, trio.TooSlowError) as exc:
            return _refused(FAILED, f"{what} failed: {exc}")
        finally:
            self._changing = ""

    async def add_replica(self, msg: AddReplica) -> AdminDone | AdminRefused:
        """Add replica ``msg.id`` as a learner, let it catch up, promote it to voter."""
        if not 0 <= msg.id <= MAX_REPLICA_ID or not 0 < len(msg.path) <= _MAX_PATH:
            return _refused(INVALID, f"bad replica id {msg.id} or path")

        async def change() -> str:
            nid = node_id(msg.id)
            await self.replica.router.submit(address_op(msg.id, msg.path), may_forward=False)
            if nid in self.replica.membership().voters:
                return f"replica {msg.id} is already a voter"
            await self.replica.node.add_server(nid)  # learner, catch up, promote (4.2.1)
            return f"replica {msg.id} is a voter"

        return await self._change(f"adding replica {msg.id}", change)  # type: ignore[no-any-return]

    async def remove_replica(self, msg: RemoveReplica) -> AdminDone | AdminRefused:
        """Remove replica ``msg.id`` from the configuration (it may be this leader)."""

        async def change() -> str:
            nid = node_id(msg.id)
            current = self.replica.membership()
            if nid not in current.voters | current.learners:
                return f"replica {msg.id} is not a member"
            await self.replica.node.remove_server(nid)
            return f"replica {msg.id} removed"

        return await self._change(f"removing replica {msg.id}", change)  # type: ignore[no-any-return]

    async def transfer_leadership(self, msg: TransferLeadership) -> AdminDone | AdminRefused:
        """Hand leadership to ``msg.to`` (or the most up-to-date other voter)."""

        async def change() -> str:
            node = self.replica.node
            me = node.status().id
            if msg.to is None:
                voters = self.replica.membership().voters - {me}
                if not voters:
                    raise InvalidConfigChange("no other voter to hand leadership to")
                # The core catches the target up before handing over (3.10): a
                # live, up-to-date voter takes over quickest.
                target = most_up_to_date(voters, node.match_index, node.heard_from)
            else:
                target = node_id(msg.to)
                if target == me:
                    return f"replica {msg.to} already leads"
            node.transfer_leadership(target)
            wait = self.replica.election_timeout * TRANSFER_ELECTIONS
            with trio.move_on_after(wait):
                while node.status().leader in (None, me):
                    with trio.move_on_after(self.replica.election_timeout / 4):
                        await node.wait_changed()
            new = node.status().leader
            if new is None or new == me:
                raise CellmeshError(
                    f"replica {replica_id(target)} did not take over within {wait:g} s"
                )
            if new != target and msg.to is not None:
                raise CellmeshError(f"replica {replica_id(new)} leads instead of {msg.to}")
            return f"replica {replica_id(new)} leads"

        return await self._change("transferring leadership", change)  # type: ignore[no-any-return]


__all__ = ["PeerSide", "Replica", "most_up_to_date"]

"""Membership changes of a replicated cell, driven by the root: grow, shrink, wipe.

Theory of operation
-------------------
:class:`MembershipChanges` changes a group one server at a time, each step
chosen afresh by :func:`~cellmesh.actors.membership.next_step` from the
members and the current leader (docs/root.md, "Replicated cells"):

* **add**: allocate the next id and persist it (ids are never reused), bind
  its peer socket (it appears in every replica's ``/run/cell/peers/`` at
  once), start it joining (``CELL_REPLICA_JOIN=1``), ask the leader to add
  it, wait until it reports itself a voter. A failed add is rolled back
  (removed again, stopped, its data deleted; its id stays used) -- except
  when the group's run has ended meanwhile (the root stops: ``down`` during
  ``cellmesh replicas``): no leader can remove it then, and the root's stop
  must not wait for one, so the record keeps it *joining*, as after a root
  that died mid-add, and the group's next start finishes its join (the
  leader may have added it already) before it brings the group to its
  target (at ``up``: the manifest's count);
* **remove**: ask the leader, wait until its configuration lacks the
  replica, stop it, delete its data. The leader goes last, after a
  leadership transfer;
* **wipe** (one replica rebuilt from its peers): move the leadership away
  from it, stop it, record it joining, have the leader remove it, wipe its
  log with the consensus library's ``wipe_replica``
  (:func:`~cellmesh.actors._replicas_group.wipe_data_dir`), start it
  joining, have the leader add it back. A wipe cut short once the
  replica is stopped (the root stops) leaves it recorded joining: the next
  start has the leader add it back, with its data wiped or, when the wipe
  did not get that far, as it was (then wipe it again).

One change at a time per group (:meth:`MembershipChanges._changing`: a
second is refused at once); the one in progress and the last failure show
in ``status``. Used by the control requests ``ChangeReplicas`` /
``WipeReplica`` (``cellmesh replicas``, ``cellmesh wipe``), by a manifest
reload, and at group start when the record and the manifest differ
(:meth:`MembershipChanges.reconcile`).

Admin requests go to the leader over its peer socket through a
:class:`ReplicaAdmin` (:class:`PeerAdmin` speaks the replicated runtime's
proteins). Every request is idempotent on the driver's side: it is sent
only while its effect is not yet visible in the replicas' stats, follows a
non-leader's hint (:class:`NotLeaderHere`), waits out a leader still
committing a previous change (:class:`LeaderBusy`), and looks for the leader
again when the one it asked died mid-request.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Final, Protocol

import attrs
import trio

from ..errors import CellmeshError, CellUnavailable
from ..sandbox._bwrap import PEERS_DIR_INSIDE
from ..transport.synapse import Synapse
from . import replicated_proteins as rp
from ._cells import CellSlot
from ._replicas_group import STATS_FRESH, Group, GroupHandle, Member, wipe_data_dir
from .errors import RootRequestError
from .membership import (
    AddMember,
    GroupView,
    PromotionCheck,
    RemoveMember,
    TransferLeadership,
    check_count,
    next_step,
    parse_replica_name,
    quorum_gap,
    replica_name,
    replica_names,
    replicas_text,
)

#: How long one membership step may take (a new replica catching up included).
STEP_TIMEOUT: Final = 120.0
#: How long a membership change waits for the group to have a leader.
LEADER_TIMEOUT: Final = 30.0


# --------------------------------------------------------------------------
# Admin requests


class NotLeaderHere(CellmeshError):
    """The replica asked is not the leader; ``leader_hint`` is the one it knows (or None)."""

    def __init__(self, replica: int, leader_hint: int | None) -> None:
        hint = "unknown" if leader_hint is None else str(leader_hint)
        super().__init__(f"replica {replica} is not the leader (leader hint: {hint})")
        self.replica = replica
        self.leader_hint = leader_hint


class LeaderBusy(CellmeshError):
    """The leader has a membership change not yet committed (it refused another); retry."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the leader is busy with a membership change: {reason}")
        self.reason = reason


class ReplicaAdmin(Protocol):
    """Admin requests to one replica over its peer socket (the replica contract).

    Each raises :class:`NotLeaderHere` when the replica is not the leader,
    :class:`LeaderBusy` when a membership change is still uncommitted there
    (a new leader must commit one in its own term first), and another
    :class:`~cellmesh.errors.CellmeshError` for any other refusal.
    """

    async def add(self, group: str, peer: Path, replica: int, path: str) -> None:
        """``AddReplica(replica, path)``: add it as a learner, promoted once caught up."""
        ...

    async def remove(self, group: str, peer: Path, replica: int) -> None:
        """``RemoveReplica(replica)``."""
        ...

    async def transfer(self, group: str, peer: Path, to: int | None) -> None:
        """``TransferLeadership(to)`` (None: the leader picks the most caught-up voter)."""
        ...


@attrs.frozen(kw_only=True)
class PeerAdmin:
    """The :class:`ReplicaAdmin` over a replica's peer socket (the replicated runtime's proteins).

    One short connection per request, as client ``root``. ``AdminRefused``
    with code ``not_leader`` becomes :class:`NotLeaderHere`, ``in_progress``
    :class:`LeaderBusy`; any other refusal a :class:`RootRequestError` with
    its code and reason.
    ``connect_timeout`` bounds reaching the replica (a dead one raises
    :class:`~cellmesh.errors.CellUnavailable`).
    """

    connect_timeout: float = 5.0

    async def _ask(self, group: str, peer: Path, msg: object) -> None:
        async with Synapse.grow(
            group, socket_path=peer, client_name="root", connect_timeout=self.connect_timeout
        ) as syn:
            reply = await syn.fire(msg)
        if isinstance(reply, rp.AdminDone):
            return
        if isinstance(reply, rp.AdminRefused):
            if reply.code == rp.NOT_LEADER:
                raise NotLeaderHere(_peer_id(peer), reply.leader)
            if reply.code == rp.IN_PROGRESS:
                raise LeaderBusy(reply.reason)
            raise RootRequestError(group, f"the leader refused ({reply.code}): {reply.reason}")
        raise RootRequestError(group, f"a replica answered {type(reply).__name__}")

    async def add(self, group: str, peer: Path, replica: int, path: str) -> None:
        """``AddReplica``: answered once the replica has caught up and votes."""
        await self._ask(group, peer, rp.AddReplica(id=replica, path=path))

    async def remove(self, group: str, peer: Path, replica: int) -> None:
        """``RemoveReplica``."""
        await self._ask(group, peer, rp.RemoveReplica(id=replica))

    async def transfer(self, group: str, peer: Path, to: int | None) -> None:
        """``TransferLeadership``: answered once another voter leads."""
        await self._ask(group, peer, rp.TransferLeadership(to=to))


def _run_ended(group: Group) -> bool:
    """``group``'s run has ended, or is ending: the root stops (its stop ends every
    group's run -- each replica stopped, or killed at ``down``'s timeout -- before
    it cancels the requests it serves), or the group's supervisor restarts it.

    No leader of that run can be asked anything then; what a change leaves
    undone is for the group's next start (the module doc).
    """
    return group.handle is None or not group.handle.running


def _peer_id(peer: Path) -> int:
    stem = peer.name.removesuffix(".sock")
    return int(stem) if stem.isdigit() else -1


# --------------------------------------------------------------------------
# The driver


class ChangeHost(Protocol):
    """What the membership driver needs from the root's replica manager."""

    @property
    def inside_bwrap(self) -> bool:
        """Replicas see their peers at ``/run/cell/peers`` (else at the host paths)."""
        ...

    def group_of(self, name: str) -> Group:
        """The group ``name`` (RootRequestError if none)."""
        ...

    async def add_member(self, group: Group, replica: int) -> Member:
        """Bind ``replica``'s peer socket and make its slot."""
        ...

    async def drop_member(self, group: Group, m: Member, *, delete_data: bool) -> None:
        """Drop ``m``'s slot and peer socket (and its data)."""
        ...

    def retire(self, slot: CellSlot) -> None:
        """Tell the slot's standby (made with an older env) to go."""
        ...

    def log(self, text: str) -> None:
        """The root's log."""
        ...


@attrs.define(eq=False)
class MembershipChanges:
    """Changes the membership of the root's groups (module doc)."""

    host: ChangeHost
    admin: ReplicaAdmin = attrs.Factory(PeerAdmin)

    @contextlib.asynccontextmanager
    async def _changing(self, group: Group, what: str) -> AsyncIterator[None]:
        """Hold ``group``'s one membership change; a failure is kept as ``group.error``.

        Refused at once (:class:`RootRequestError`) while another change holds it.
        """
        if group.lock.locked():
            raise RootRequestError(
                group.name, f"a membership change is in progress ({group.change})"
            )
        async with group.lock:
            group.change = what
            group.error = ""
            try:
                yield
            except CellmeshError as exc:
                group.error = f"{group.change}: {exc}"
                raise
            finally:
                group.change = ""
                group.touch()

    async def change(self, name: str, count: int) -> str:
        """Bring group ``name`` to ``count`` replicas, one server at a time; say what was done."""
        check_count(count)
        group = self.host.group_of(name)
        self._running_handle(group)  # refused at once when the group does not run
        before = list(group.record.members)
        async with self._changing(group, f"{len(before)} -> {count}"):
            await self._drive(group, count)
        after = list(group.record.members)
        if before == after:
            return f"{name} has {replicas_text(count)} ({replica_names(name, after)})"
        added = [i for i in after if i not in before]
        removed = [i for i in before if i not in after]
        parts = [f"{name}: {len(before)} -> {replicas_text(len(after))}"]
        if added:
            parts.append(f"added {replica_names(name, added)}")
        if removed:
            parts.append(f"removed {replica_names(name, removed)}")
        return "; ".join(parts)

    async def reconcile(self, group: Group) -> None:
        """At group start: finish joins and reach the target the manifest asks for."""
        try:
            async with self._changing(group, f"{len(group.record.members)} -> {group.target}"):
                await self._drive(group, group.target)
        except CellmeshError as exc:
            self.host.log(f"root: {group.name}: membership change failed: {exc}")

    async def _drive(self, group: Group, target: int) -> None:
        """Finish the joins the record shows, then step towards ``target`` (module doc)."""
        old = len(group.record.members)
        group.target = target
        for replica in list(group.record.joining):
            group.change = f"{replica_name(group.name, replica)} joining"
            await self._finish_join(group, replica)
        while True:
            view = await self._leader(group)
            step = next_step(group.record.members, target, view.leader)
            if step is None:
                return
            if isinstance(step, AddMember):
                group.change = f"{old} -> {target}: adding {group.name}/{group.record.next_id}"
                await self._add(group)
            elif isinstance(step, RemoveMember):
                group.change = f"{old} -> {target}: removing {group.name}/{step.replica}"
                await self._check_quorum_without(
                    group, step.replica, "to commit its removal", stopped_first=False
                )
                await self._remove(group, step.replica)
            else:
                assert isinstance(step, TransferLeadership)
                group.change = (
                    f"{old} -> {target}: moving the leadership off {group.name}/{step.leader}"
                )
                await self._transfer(group, step.leader)

    async def _add(self, group: Group) -> None:
        record, new = group.record.allocate()
        await group.save(record)  # the id is used from now on, whatever happens
        member = await self.host.add_member(group, new)
        self._env_changed(group)
        try:
            await self._running_handle(group).start_member(member)
            await self._join(group, new)
        except BaseException as exc:
            if _run_ended(group):
                # No leader of that run can remove it, and waiting for another one
                # would hold up the root's stop: the record keeps the member joining
                # (its data stays), and the group's next start finishes its join,
                # then brings the group to its target.
                name = replica_name(group.name, new)
                why = (f"adding {name} was cut short: the group stopped (the root stops, "
                       f"or the group restarts); {name} stays recorded as joining: the "
                       "group's next start completes its join, then brings the group to "
                       f"its target")
                self.host.log(f"root: {group.name}: {why}")
                if isinstance(exc, Exception):  # (a cancellation goes on as it is)
                    raise RootRequestError(group.name, why) from exc
                raise
            with trio.CancelScope(shield=True), trio.move_on_after(30):
                await self._undo_add(group, member)
            raise
        await group.save(group.record.joined(new))

    async def _undo_add(self, group: Group, member: Member) -> None:
        with contextlib.suppress(CellmeshError):
            await self._drop(group, member.id, timeout=10.0)
        if group.handle is not None:
            await group.handle.stop_member(member)
        await self.host.drop_member(group, member, delete_data=True)
        await group.save(group.record.without(member.id))
        self._env_changed(group)

    async def _finish_join(self, group: Group, replica: int) -> None:
        """A member the record shows joining (root restarted mid-add, or a wipe)."""
        await self._join(group, replica)
        await group.save(group.record.joined(replica))

    async def _remove(self, group: Group, replica: int) -> None:
        await self._drop(group, replica)
        member = group.members[replica]
        if group.handle is not None:
            await group.handle.stop_member(member)
        await self.host.drop_member(group, member, delete_data=True)
        await group.save(group.record.without(replica))
        self._env_changed(group)

    # ------------------------------------------------------------ single steps

    def _config(self, group: Group) -> tuple[int, ...] | None:
        """Every id in the leader's configuration (voters and learners); None: no leader."""
        view = group.view()
        if view.leader is None:
            return None
        voters, learners = view.config(group.stats())
        return (*voters, *learners)

    async def _join(self, group: Group, replica: int) -> None:
        """Have the leader add ``replica``; wait until it votes (:class:`PromotionCheck`)."""
        path = self._inside_path(group, replica)
        promoted = PromotionCheck(replica)
        await self._at_leader(
            group, lambda a, peer: a.add(group.name, peer, replica, path),
            done=lambda: promoted(group.stats()),
        )
        await self._wait(
            group, lambda: promoted(group.stats()),
            f"{replica_name(group.name, replica)} to catch up and become a voter",
        )

    async def _drop(self, group: Group, replica: int, *, timeout: float = STEP_TIMEOUT) -> None:
        """Have the leader remove ``replica``; wait until its configuration lacks it."""

        def gone() -> bool:
            config = self._config(group)
            return config is not None and replica not in config

        await self._at_leader(
            group, lambda a, peer: a.remove(group.name, peer, replica), done=gone,
            timeout=timeout,
        )
        await self._wait(group, gone, f"the leader to drop {replica_name(group.name, replica)}",
                         timeout)

    async def _transfer(self, group: Group, leader: int) -> None:
        """Have ``leader`` hand its leadership over; wait until another replica leads."""

        def moved() -> bool:
            return group.view().leader not in (None, leader)

        async def transfer(admin: ReplicaAdmin, peer: Path) -> None:
            try:
                await admin.transfer(group.name, peer, None)
            except RootRequestError as exc:
                # The voter it chose did not take over in time (it fell behind,
                # or died meanwhile): ask again; done() stops a repeat once
                # another replica leads.
                raise LeaderBusy(str(exc)) from exc

        await self._at_leader(group, transfer, done=moved)
        await self._wait(group, moved,
                         f"another replica than {replica_name(group.name, leader)} to lead")

    # ------------------------------------------------------------ wipe

    async def wipe(self, name: str) -> str:
        """Rebuild replica ``name`` (``X/i``) from its peers (docs/root.md); say what was done."""
        parsed = parse_replica_name(name)
        if parsed is None:
            raise RootRequestError(name, "expected a replica name like ledger/1")
        group = self.host.group_of(parsed[0])
        replica = parsed[1]
        member = group.members.get(replica)
        if member is None:
            raise RootRequestError(name, f"no such replica (members: "
                                   f"{replica_names(group.name, group.record.members)})")
        if len(group.members) == 1:
            raise RootRequestError(name, "is the group's only replica: wiping it loses the data")
        async with self._changing(group, f"wiping {name}"):
            await self._wipe(group, member)
        return f"wiped {name}: it rejoined empty and caught up from its peers"

    async def _wipe(self, group: Group, member: Member) -> None:
        handle = self._running_handle(group)
        name = replica_name(group.name, member.id)
        await self._check_quorum_without(group, member.id, "to rebuild it", stopped_first=True)
        view = await self._leader(group)
        if view.leader == member.id:
            await self._transfer(group, member.id)
        await handle.stop_member(member)
        # Joining from before the leader may drop it: a wipe cut short from here on
        # (the root stops, the leader does not answer) leaves a member the next
        # start has the leader add back, never one the group forgot.
        await group.save(group.record.rejoining(member.id))
        self.host.retire(member.slot)  # (its standby has the env of a voter)
        await self._drop(group, member.id)
        how = await trio.to_thread.run_sync(wipe_data_dir, member.part.data_dir, member.id)
        self.host.log(f"root: {name}: {how}")
        await handle.start_member(member)
        await self._finish_join(group, member.id)

    # ------------------------------------------------------------ helpers

    @staticmethod
    async def _check_quorum_without(
        group: Group, replica: int, why: str, *, stopped_first: bool
    ) -> None:
        """Refuse (nothing done yet) when the voters other than ``replica`` that
        answer could not commit its removal (:func:`quorum_gap`): the group
        would be left without a leader. Learners do not count. Members that
        just started get :data:`STATS_FRESH` seconds to report first."""
        deadline = trio.current_time() + STATS_FRESH
        while True:
            now = trio.current_time()
            voters, _ = group.view().config(group.stats())
            if not voters:  # no leader known: the record's members stand in
                voters = tuple(group.members)
            up = [i for i, m in group.members.items() if m.answering(now)]
            gap = quorum_gap(voters, up, replica, stopped_first=stopped_first)
            if gap is None:
                return
            if now >= deadline:
                break
            await trio.sleep(0.1)
        name = replica_name(group.name, replica)
        down, needed = gap
        if down:
            raise RootRequestError(
                name, f"{replica_names(group.name, down)} not running or not answering: "
                f"without {name} the group would have no quorum {why}; start them first "
                "(or wait until they answer)",
            )
        idle = [i for i in group.members if i not in voters]  # learners, or removed
        hint = (f"; {replica_names(group.name, idle)} {'does' if len(idle) == 1 else 'do'} "
                f"not vote: `cellmesh wipe {replica_name(group.name, idle[0])}` has it rejoin "
                "as a voter" if idle else
                f"; grow the group first (`cellmesh replicas {group.name} 3`)")
        raise RootRequestError(
            name, f"the group has {len(voters)} voters ({replica_names(group.name, voters)}): "
            f"without {name} the others are fewer than the {needed} votes a change needs "
            f"{why}{hint}",
        )

    def _running_handle(self, group: Group) -> GroupHandle:
        handle = group.handle
        if handle is None or not handle.running:
            raise RootRequestError(group.name, "the group is not running")
        return handle

    def _inside_path(self, group: Group, replica: int) -> str:
        """``replica``'s peer socket as a replica sees it (the same in every replica)."""
        if self.host.inside_bwrap:
            return f"{PEERS_DIR_INSIDE}/{replica}.sock"
        return str(group.peer_path(replica))

    def _env_changed(self, group: Group) -> None:
        """The members changed: standbys made for the old env must not serve."""
        for m in group.members.values():
            self.host.retire(m.slot)

    async def _leader(self, group: Group, timeout: float = LEADER_TIMEOUT) -> GroupView:
        await self._wait(group, lambda: group.view().leader is not None, "a leader", timeout)
        return group.view()

    async def _wait(
        self, group: Group, ready: Callable[[], bool], what: str, timeout: float = STEP_TIMEOUT
    ) -> None:
        """Wait (on the group's changes) until ``ready()``; RootRequestError after ``timeout``."""
        with trio.move_on_after(timeout):
            while not ready():
                with trio.move_on_after(1.0):  # stats arrive every tick; never wait blind
                    await group.changed.wait()
            return
        raise RootRequestError(group.name, f"gave up waiting {timeout:g} s for {what}")

    async def _at_leader(
        self, group: Group, op: Callable[[ReplicaAdmin, Path], Awaitable[None]], *,
        done: Callable[[], bool], timeout: float = STEP_TIMEOUT,
    ) -> None:
        """Run ``op`` at the leader unless ``done()`` already holds.

        A refusal naming another leader (:class:`NotLeaderHere`) is followed;
        a leader that cannot be reached (it just died) is looked for again; a
        leader still committing a previous change (:class:`LeaderBusy`) is
        asked again after the group's next change (or a second).
        ``done`` is asked before every attempt, so a request whose answer was
        lost with its leader is not repeated once it has taken effect.
        """
        admin = self.admin
        last = ""
        with trio.move_on_after(timeout):
            target: int | None = None
            while not done():
                if target is None or target not in group.members:
                    target = (await self._leader(group)).leader
                    assert target is not None
                try:
                    await op(admin, group.peer_path(target))
                    return
                except NotLeaderHere as exc:
                    hint = exc.leader_hint
                    target = hint if hint is not None and hint != target else None
                    if target is not None:
                        continue  # ask the leader it named, at once
                except CellUnavailable:
                    target = None
                except LeaderBusy as exc:
                    # Its previous change commits within a heartbeat or an
                    # election (a transfer that timed out: its next try).
                    last = exc.reason
                with trio.move_on_after(1.0):
                    await group.changed.wait()
            return
        why = f" (the last refusal: {last})" if last else ""
        raise RootRequestError(
            group.name, f"no leader accepted the request within {timeout:g} s{why}"
        )


__all__ = [
    "LEADER_TIMEOUT",
    "STEP_TIMEOUT",
    "ChangeHost",
    "LeaderBusy",
    "MembershipChanges",
    "NotLeaderHere",
    "PeerAdmin",
    "ReplicaAdmin",
]

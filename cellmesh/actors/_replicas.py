"""Replicated cells in the root: sockets, supervision, stats and membership of each group.

Theory of operation
-------------------
A cell declared ``replicas = N`` is a *group* (docs/root.md, "Replicated
cells"; the pure rules are :mod:`cellmesh.actors.membership`). At root start
:meth:`Replicas.add_group` binds the group's client socket
(``$CELL_SOCKET_DIR/X.sock``: fd 3 of every replica), reads or creates the
group record (``$CELL_HOME/data/X/group.json``), and makes one slot per
member ``X/i`` with its own peer socket (``$CELL_SOCKET_DIR/.replicas/X/i.sock``,
fd 4 of replica ``i``; the directory is bound read-only into every replica's
sandbox at ``/run/cell/peers`` and into nobody else's) and its own data
directory ``$CELL_HOME/data/X/i/``.

Supervision. The group is one child of its manifest supervisor; its handle
(:class:`GroupHandle`) runs one small one-for-one supervisor per replica
(intensity :data:`REPLICA_INTENSITY` in :data:`REPLICA_PERIOD` seconds, the
replica ``transient``: a replica that stops itself normally -- removed from
the group -- is not restarted). So a replica's crash restarts that replica
alone, each with its own restart budget: a replica that cannot start (a
damaged log) exhausts only its own and is *given up* (its supervisor ends;
the group keeps serving). The group starts its replicas concurrently and is
started once a majority is ready; it fails (to start, or later: an abnormal
exit its parent supervisor handles like any child's) only when fewer than a
majority of its members are left. Each replica keeps its own standby.

Membership (:meth:`Replicas.change`, the control request ``ChangeReplicas``,
``cellmesh replicas X N``, and the next ``up`` when the manifest's count
differs from the group's): one server at a time, each step chosen afresh by
:func:`~cellmesh.actors.membership.next_step`. Add: allocate the next id and
persist it, bind its peer socket, start it joining (``CELL_REPLICA_JOIN=1``),
ask the leader to add it, wait until it reports itself a voter. Remove: ask
the leader, wait until its configuration excludes the replica, stop it,
delete its data. The leader is removed last, after a leadership transfer.
A failed add is rolled back. :meth:`Replicas.wipe` rebuilds one replica
from its peers (stop, remove, wipe, start joining, add).

Admin requests go to the leader over its peer socket through a
:class:`ReplicaAdmin`; a non-leader's refusal (:class:`NotLeaderHere`)
makes the driver retry at the leader it names.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final, Protocol

import attrs
import trio

from ..config import Paths, ensure_private_dir
from ..errors import CellmeshError, CellUnavailable
from ..sandbox._bwrap import PEERS_DIR_INSIDE
from ..transport._sockets import bind_unix_listener
from ..transport.synapse import Synapse
from . import replicated_proteins as rp
from ._cells import CellSlot, ReplicaPart, reason_text
from ._launch import GROUP_RECORD
from .control import GroupStatus, ReplicaInfo, ReplicaStats
from .errors import RootRequestError, SupervisorEscalation
from .manifest import CellDecl
from .membership import (
    AddMember,
    GroupRecord,
    GroupRecordError,
    GroupView,
    RemoveMember,
    TransferLeadership,
    check_count,
    is_voter,
    majority,
    next_step,
    parse_replica_name,
    replica_env,
    replica_name,
    stats_problem,
)
from .policy import (
    AbnormalExit,
    ChildSpec,
    ExitReason,
    Restart,
    ShutdownExit,
    Strategy,
    SupervisorSpec,
)
from .supervisor import ChildFactory, Supervisor, SupervisorEvent

#: Restarts one replica may have in :data:`REPLICA_PERIOD` before it is given up.
REPLICA_INTENSITY: Final = 5
#: The window of :data:`REPLICA_INTENSITY`, in seconds.
REPLICA_PERIOD: Final = 10.0
#: How long one membership step may take (a new replica catching up included).
STEP_TIMEOUT: Final = 120.0
#: How long a membership change waits for the group to have a leader.
LEADER_TIMEOUT: Final = 30.0
#: The group record's file name inside ``$CELL_HOME/data/X/``.
RECORD_NAME: Final = GROUP_RECORD


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


def _peer_id(peer: Path) -> int:
    stem = peer.name.removesuffix(".sock")
    return int(stem) if stem.isdigit() else -1


# --------------------------------------------------------------------------
# Groups


@attrs.define(eq=False)
class Member:
    """One member of a group: its slot, and the supervisor running it (when it runs)."""

    id: int
    slot: CellSlot
    sup: Supervisor | None = None

    @property
    def part(self) -> ReplicaPart:
        """The slot's replica part."""
        assert self.slot.replica is not None
        return self.slot.replica

    @property
    def running(self) -> bool:
        """It has a process that is starting or serving."""
        instance = self.slot.instance
        return instance is not None and instance.state in ("starting", "running")


@attrs.define(eq=False)
class Group:
    """A replicated cell the root runs (module doc); outlives each :class:`GroupHandle`."""

    name: str
    decl: CellDecl
    supervisor: str
    socket_path: Path
    listener: socket.socket
    peers_dir: Path
    data_dir: Path
    record: GroupRecord
    target: int
    members: dict[int, Member] = attrs.Factory(dict)
    handle: GroupHandle | None = None
    change: str = ""
    error: str = ""
    lock: trio.Lock = attrs.Factory(trio.Lock)
    changed: trio.Event = attrs.Factory(trio.Event)

    def touch(self) -> None:
        """Wake whoever waits for the group's stats or members to change."""
        self.changed.set()
        self.changed = trio.Event()

    def stats(self) -> dict[int, ReplicaStats]:
        """The latest stats of every member that has a process."""
        out: dict[int, ReplicaStats] = {}
        for i, m in self.members.items():
            if m.running and m.part.stats is not None:
                out[i] = m.part.stats
        return out

    def view(self) -> GroupView:
        """The leader, its term and log end, from the running members' stats."""
        return GroupView.of(self.stats().values())

    def peer_path(self, replica: int) -> Path:
        """The host path of ``replica``'s peer socket."""
        return self.peers_dir / f"{replica}.sock"


@attrs.define(eq=False)
class GroupHandle:
    """One run of a group, as its supervisor's child handle (module doc).

    ``wait`` returns ``shutdown`` after a stop, ``AbnormalExit`` when the group
    lost its quorum. The task is shielded: the parent stops it with
    ``terminate`` (every replica stopped concurrently, each with its
    shutdown) or ``kill``.
    """

    group: Group
    manager: Replicas
    _scope: trio.CancelScope = attrs.field(factory=lambda: trio.CancelScope(shield=True))
    _nursery: trio.Nursery | None = None
    _end: trio.Event = attrs.Factory(trio.Event)
    _done: trio.Event = attrs.Factory(trio.Event)
    _reason: ExitReason = attrs.Factory(ShutdownExit)
    _brutal: bool = False

    # ------------------------------------------------------------ ChildHandle

    async def wait(self) -> ExitReason:
        """Wait until this run of the group has ended."""
        await self._done.wait()
        return self._reason

    def terminate(self) -> None:
        """Stop every replica (concurrently, each with its shutdown) and end."""
        self._end.set()

    def kill(self) -> None:
        """Kill every replica at once and end."""
        self._brutal = True
        for m in self.group.members.values():
            if m.sup is not None:
                m.sup.kill()
        self._end.set()
        self._scope.cancel()

    # ------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Start the members concurrently; started once a majority is ready (module doc)."""
        group = self.group
        refused: str | None = None
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    failed = await self._start_all(list(group.members.values()))
                    if len(group.members) - len(failed) < majority(len(group.members)):
                        refused = self._no_quorum(failed)
                    else:
                        task_status.started()
                        self.manager.group_started(group, nursery)
                        await self._end.wait()
                    await self._stop_all()
                    nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            self._done.set()
            group.touch()
        if refused is not None:
            raise RootRequestError(group.name, refused)  # a start failure for the parent

    def _no_quorum(self, failed: dict[int, str]) -> str:
        group = self.group
        why = "; ".join(f"{replica_name(group.name, i)}: {text}" for i, text in failed.items())
        return (
            f"only {len(group.members) - len(failed)} of {len(group.members)} replicas "
            f"started (a majority is {majority(len(group.members))}): {why}"
        )

    async def _start_all(self, members: list[Member]) -> dict[int, str]:
        failed: dict[int, str] = {}

        async def one(m: Member) -> None:
            try:
                await self.start_member(m)
            except (SupervisorEscalation, RootRequestError) as exc:
                failed[m.id] = m.part.failure() or str(exc)

        async with trio.open_nursery() as starter:
            for m in members:
                starter.start_soon(one, m)
        return failed

    async def start_member(self, m: Member) -> None:
        """Start ``m``'s supervisor (and so its replica); raise if it cannot start."""
        if self._nursery is None or self._end.is_set():
            raise RootRequestError(self.group.name, "the group is not running")
        await self._nursery.start(self._run_member, m)

    async def stop_member(self, m: Member) -> None:
        """Stop ``m``'s supervisor and replica (for good in this run)."""
        sup = m.sup
        if sup is not None:
            await sup.stop()

    async def _run_member(self, m: Member, *, task_status: trio.TaskStatus[Supervisor]) -> None:
        group = self.group
        name = replica_name(group.name, m.id)
        spec = SupervisorSpec(
            strategy=Strategy.ONE_FOR_ONE, intensity=REPLICA_INTENSITY, period=REPLICA_PERIOD,
            children=(ChildSpec(
                id=name, restart=Restart.TRANSIENT, shutdown=group.decl.shutdown,
                args=("cell", name),
            ),),
        )  # fmt: skip
        sup = Supervisor(spec, self.manager.factory, self.manager.event_sink(group.name))
        m.sup = sup
        m.part.given_up = False
        try:
            await sup.run(task_status=task_status)
        except SupervisorEscalation as exc:
            if not sup.started:
                m.part.given_up = True
                raise
            m.part.given_up = True
            self.manager.gave_up(group, m, exc)
            self._check_quorum()
        finally:
            if m.sup is sup:
                m.sup = None
            group.touch()

    def _check_quorum(self) -> None:
        group = self.group
        lost = [i for i, m in group.members.items() if m.part.given_up]
        if len(group.members) - len(lost) < majority(len(group.members)):
            names = ", ".join(replica_name(group.name, i) for i in lost)
            self._reason = AbnormalExit(text=f"lost its quorum ({names} given up)")
            self.manager.record(group.name, f"lost its quorum: {names} given up")
            self._end.set()

    async def _stop_all(self) -> None:
        async with trio.open_nursery() as stopper:
            for m in self.group.members.values():
                if m.sup is not None:
                    if self._brutal:
                        m.sup.kill()
                    stopper.start_soon(m.sup.stop)


# --------------------------------------------------------------------------
# The manager


@attrs.define(eq=False)
class Replicas:
    """Every replicated cell of one root (module doc).

    The root passes what the groups need of it as callables: its slot
    table's ``add_slot``/``drop_slot``, the restart log, the supervisors'
    event sink, and the launcher's ``retire`` (standbys made with an older
    env must go). ``factory`` (the root) starts a replica's process.
    """

    paths: Paths
    factory: ChildFactory
    add_slot: Callable[..., Awaitable[CellSlot]]
    drop_slot: Callable[[CellSlot], Awaitable[None]]
    record: Callable[[str, str], None]
    on_event: Callable[[str, SupervisorEvent], None]
    retire: Callable[[CellSlot], None]
    log: Callable[[str], None]
    admin: ReplicaAdmin = attrs.Factory(PeerAdmin)
    inside_bwrap: bool = False
    groups: dict[str, Group] = attrs.Factory(dict)

    # ------------------------------------------------------------ setup

    async def add_group(self, decl: CellDecl, *, name: str, supervisor: str) -> Group:
        """Bind the group's sockets, read (or create) its record, make its members' slots."""
        assert name == decl.name
        assert decl.replicas is not None
        if ".." in name:
            raise RootRequestError(name, "'..' is reserved in cell names (the root's own ids)")
        data_dir = self.paths.data_dir / name
        record = await trio.to_thread.run_sync(_load_record, data_dir, decl.replicas)
        socket_path = self.paths.socket_path(name)
        listener = bind_unix_listener(socket_path, mode=0o666)
        listener.setblocking(False)
        peers_dir = self.paths.socket_dir / ".replicas" / name
        group = Group(
            name=name, decl=decl, supervisor=supervisor, socket_path=socket_path,
            listener=listener, peers_dir=peers_dir, data_dir=data_dir, record=record,
            target=decl.replicas,
        )
        self.groups[name] = group
        try:
            ensure_private_dir(peers_dir.parent)
            peers_dir.mkdir(mode=0o700, exist_ok=True)
            for stale in peers_dir.iterdir():  # ours alone (one root per socket dir)
                with contextlib.suppress(OSError):
                    stale.unlink()
            os.chmod(peers_dir, 0o711)  # reachable by name from the replicas' uid
            for i in record.members:
                await self._add_member(group, i)
        except BaseException:
            await self._close_group(group)
            raise
        return group

    async def _add_member(self, group: Group, replica: int) -> Member:
        peer_path = group.peer_path(replica)
        peer = _bind_peer(peer_path)
        part = ReplicaPart(
            group=group.name, id=replica, peer_listener=peer, peer_path=peer_path,
            peers_dir=group.peers_dir, data_dir=group.data_dir / str(replica),
        )
        try:
            slot = await self.add_slot(
                group.decl, name=replica_name(group.name, replica), supervisor=group.name,
                replica=part, shared=(group.socket_path, group.listener),
            )
        except BaseException:
            peer.close()
            with contextlib.suppress(OSError):
                peer_path.unlink()
            raise
        member = Member(id=replica, slot=slot)
        group.members[replica] = member
        return member

    async def _drop_member(self, group: Group, m: Member, *, delete_data: bool) -> None:
        group.members.pop(m.id, None)
        await self.drop_slot(m.slot)
        m.part.peer_listener.close()
        with contextlib.suppress(OSError):
            m.part.peer_path.unlink()
        if delete_data:
            await trio.to_thread.run_sync(
                lambda: shutil.rmtree(m.part.data_dir, ignore_errors=True)
            )
        group.touch()

    async def close(self) -> None:
        """Close every group's sockets (the root has dropped the slots already)."""
        for group in list(self.groups.values()):
            await self._close_group(group)

    async def _close_group(self, group: Group) -> None:
        for m in list(group.members.values()):
            await self._drop_member(group, m, delete_data=False)
        self.groups.pop(group.name, None)
        group.listener.close()
        with contextlib.suppress(OSError):
            group.socket_path.unlink()
        with contextlib.suppress(OSError):
            group.peers_dir.rmdir()

    # ------------------------------------------------------------ root hooks

    async def start_group(self, name: str, nursery: trio.Nursery) -> GroupHandle:
        """Start a run of group ``name`` (the root's ChildFactory for kind ``group``)."""
        group = self.groups[name]
        handle = GroupHandle(group=group, manager=self)
        group.handle = handle
        await nursery.start(handle.run)
        return handle

    def group_started(self, group: Group, nursery: trio.Nursery) -> None:
        """A run of ``group`` is up: finish any membership change its record shows."""
        if group.record.joining or len(group.record.members) != group.target:
            nursery.start_soon(self._reconcile, group)

    def event_sink(self, group: str) -> Callable[[SupervisorEvent], None]:
        """The per-replica supervisors' events go to the root's, as group ``group``'s."""
        return lambda event: self.on_event(group, event)

    def gave_up(self, group: Group, m: Member, exc: SupervisorEscalation) -> None:
        """``m``'s supervisor gave up on it: the group serves on without it."""
        text = f"given up after {REPLICA_INTENSITY} restarts in {REPLICA_PERIOD:g} s"
        self.record(replica_name(group.name, m.id), text)
        self.log(f"root: replica {replica_name(group.name, m.id)} {text}: {m.part.failure()}")

    def env_for(self, slot: CellSlot) -> dict[str, str]:
        """The ``CELL_REPLICA_*`` env of the next process of replica ``slot``."""
        part = slot.replica
        assert part is not None
        group = self.groups[part.group]
        inside = PEERS_DIR_INSIDE if self.inside_bwrap else str(group.peers_dir)
        paths = {i: f"{inside}/{i}.sock" for i in group.record.members}
        return replica_env(part.id, group.record, paths, data_empty=_empty(part.data_dir))

    def on_stats(self, slot: CellSlot, stats: ReplicaStats) -> None:
        """A replica's stats arrived on its umbilical (dropped when they lie or overflow)."""
        part = slot.replica
        if part is None or stats_problem(stats, part.id) is not None:
            return
        part.stats = stats
        group = self.groups.get(part.group)
        if group is None:
            return
        if not group.record.bootstrapped and (stats.role == "leader" or stats.leader is not None):
            group.record = attrs.evolve(group.record, bootstrapped=True)
            self._persist_soon(group)
        group.touch()

    def on_ready(self, slot: CellSlot) -> None:
        """A replica's process reported ready: its failure is over."""
        if slot.replica is not None:
            slot.replica.error = ""
            self._touch(slot)

    def on_exit(self, slot: CellSlot, reason: ExitReason) -> None:
        """A replica's process ended: forget its stats, keep why it failed."""
        part = slot.replica
        if part is None:
            return
        part.stats = None
        if isinstance(reason, AbnormalExit):
            part.error = reason_text(reason)
        self._touch(slot)

    def _touch(self, slot: CellSlot) -> None:
        assert slot.replica is not None
        group = self.groups.get(slot.replica.group)
        if group is not None:
            group.touch()

    def socket_of(self, name: str) -> Path | None:
        """The client socket of group ``name`` (None: not a group)."""
        group = self.groups.get(name)
        return None if group is None else group.socket_path

    # ------------------------------------------------------------ status

    def info(self, slot: CellSlot) -> ReplicaInfo | None:
        """The replica columns of ``slot``'s status row (None for a plain cell)."""
        part = slot.replica
        if part is None:
            return None
        group = self.groups.get(part.group)
        view = group.view() if group is not None else GroupView.of(())
        s = part.stats if slot.instance is not None and slot.instance.state != "exited" else None
        return ReplicaInfo(
            group=part.group, replica=part.id, role="unknown" if s is None else s.role,
            term=None if s is None else s.term, leader=None if s is None else s.leader,
            commit_index=None if s is None else s.commit_index,
            applied_index=None if s is None else s.applied_index,
            last_index=None if s is None else s.last_index, lag=view.lag(s),
            voters=[] if s is None else list(s.voters),
            learners=[] if s is None else list(s.learners),
            error=part.failure(), given_up=part.given_up,
        )

    def status(self) -> list[GroupStatus]:
        """One row per group: members, target, leader, change in progress, last error."""
        out = []
        for group in self.groups.values():
            view = group.view()
            out.append(GroupStatus(
                name=group.name, supervisor=group.supervisor,
                members=list(group.record.members), target=group.target, leader=view.leader,
                term=view.term, change=group.change, error=group.error,
            ))
        return out

    # ------------------------------------------------------------ membership

    def group_of(self, name: str) -> Group:
        """The group ``name`` (:class:`RootRequestError` when it is not a replicated cell)."""
        group = self.groups.get(name)
        if group is None:
            raise RootRequestError(name, "is not a replicated cell of this root")
        return group

    async def change(self, name: str, count: int) -> str:
        """Bring group ``name`` to ``count`` replicas, one server at a time; say what was done."""
        check_count(count)
        group = self.group_of(name)
        if group.lock.locked():
            raise RootRequestError(name, f"a membership change is in progress ({group.change})")
        async with group.lock:
            before = list(group.record.members)
            await self._drive(group, count)
        after = list(group.record.members)
        if before == after:
            return f"{name} has {count} replicas ({_names(name, after)})"
        added = [i for i in after if i not in before]
        removed = [i for i in before if i not in after]
        parts = [f"{name}: {len(before)} -> {len(after)} replicas"]
        if added:
            parts.append(f"added {_names(name, added)}")
        if removed:
            parts.append(f"removed {_names(name, removed)}")
        return "; ".join(parts)

    async def _reconcile(self, group: Group) -> None:
        """At group start: finish joins and reach the target the manifest asks for."""
        if group.lock.locked():
            return
        try:
            async with group.lock:
                await self._drive(group, group.target)
        except CellmeshError as exc:
            self.log(f"root: {group.name}: membership change failed: {exc}")

    async def _drive(self, group: Group, target: int) -> None:
        old = len(group.record.members)
        group.target = target
        group.error = ""
        try:
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
                    await self._remove(group, step.replica)
                else:
                    assert isinstance(step, TransferLeadership)
                    group.change = (
                        f"{old} -> {target}: moving the leadership off {group.name}/{step.leader}"
                    )
                    await self._transfer(group, step.leader)
        except CellmeshError as exc:
            group.error = f"{group.change}: {exc}"
            raise
        finally:
            group.change = ""
            group.touch()

    async def _add(self, group: Group) -> None:
        record, new = group.record.allocate()
        await self._save(group, record)  # the id is used from now on, whatever happens
        member = await self._add_member(group, new)
        self._env_changed(group)
        try:
            await self._running_handle(group).start_member(member)
            await self._join(group, new)
        except BaseException:
            with trio.CancelScope(shield=True), trio.move_on_after(30):
                await self._undo_add(group, member)
            raise
        await self._save(group, group.record.joined(new))

    async def _undo_add(self, group: Group, member: Member) -> None:
        with contextlib.suppress(CellmeshError):
            await self._drop(group, member.id, timeout=10.0)
        if group.handle is not None:
            await group.handle.stop_member(member)
        await self._drop_member(group, member, delete_data=True)
        await self._save(group, group.record.without(member.id))
        self._env_changed(group)

    async def _finish_join(self, group: Group, replica: int) -> None:
        """A member the record shows joining (root restarted mid-add, or a wipe)."""
        await self._join(group, replica)
        await self._save(group, group.record.joined(replica))

    async def _remove(self, group: Group, replica: int) -> None:
        await self._drop(group, replica)
        member = group.members[replica]
        if group.handle is not None:
            await group.handle.stop_member(member)
        await self._drop_member(group, member, delete_data=True)
        await self._save(group, group.record.without(replica))
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
        """Have the leader add ``replica`` and wait until it reports itself a voter."""
        member = group.members[replica]
        path = self._inside_path(group, replica)
        await self._at_leader(
            group, lambda a, peer: a.add(group.name, peer, replica, path),
            done=lambda: is_voter(member.part.stats),
        )
        await self._wait(
            group, lambda: is_voter(member.part.stats),
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

        await self._at_leader(
            group, lambda a, peer: a.transfer(group.name, peer, None), done=moved
        )
        await self._wait(group, moved,
                         f"another replica than {replica_name(group.name, leader)} to lead")

    # ------------------------------------------------------------ wipe

    async def wipe(self, name: str) -> str:
        """Rebuild replica ``name`` (``X/i``) from its peers (docs/root.md); say what was done."""
        parsed = parse_replica_name(name)
        if parsed is None:
            raise RootRequestError(name, "expected a replica name like ledger/1")
        group = self.group_of(parsed[0])
        replica = parsed[1]
        member = group.members.get(replica)
        if member is None:
            raise RootRequestError(name, f"no such replica (members: "
                                   f"{_names(group.name, group.record.members)})")
        if len(group.members) == 1:
            raise RootRequestError(name, "is the group's only replica: wiping it loses the data")
        if group.lock.locked():
            raise RootRequestError(group.name,
                                   f"a membership change is in progress ({group.change})")
        async with group.lock:
            try:
                group.change = f"wiping {name}"
                await self._wipe(group, member)
            except CellmeshError as exc:
                group.error = f"wiping {name}: {exc}"
                raise
            finally:
                group.change = ""
                group.touch()
        return f"wiped {name}: it rejoined empty and caught up from its peers"

    async def _wipe(self, group: Group, member: Member) -> None:
        handle = self._running_handle(group)
        name = replica_name(group.name, member.id)
        others = [m for i, m in group.members.items() if i != member.id]
        down = [replica_name(group.name, m.id) for m in others if not m.running]
        if len(others) - len(down) < majority(len(others)):
            raise RootRequestError(
                name, f"{', '.join(down)} not running: without {name} the group would "
                "have no quorum to rebuild it; start them first",
            )
        view = await self._leader(group)
        if view.leader == member.id:
            await self._transfer(group, member.id)
        await handle.stop_member(member)
        await self._drop(group, member.id)
        await trio.to_thread.run_sync(wipe_data_dir, member.part.data_dir)
        await self._save(group, group.record.rejoining(member.id))
        self.retire(member.slot)
        await handle.start_member(member)
        await self._finish_join(group, member.id)

    # ------------------------------------------------------------ helpers

    def _running_handle(self, group: Group) -> GroupHandle:
        handle = group.handle
        if handle is None or handle._done.is_set():
            raise RootRequestError(group.name, "the group is not running")
        return handle

    def _inside_path(self, group: Group, replica: int) -> str:
        """``replica``'s peer socket as a replica sees it (the same in every replica)."""
        if self.inside_bwrap:
            return f"{PEERS_DIR_INSIDE}/{replica}.sock"
        return str(group.peer_path(replica))

    def _env_changed(self, group: Group) -> None:
        """The members changed: standbys made for the old env must not serve."""
        for m in group.members.values():
            self.retire(m.slot)

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
                except LeaderBusy:
                    pass  # its previous change commits within a heartbeat or an election
                with trio.move_on_after(1.0):
                    await group.changed.wait()
            return
        raise RootRequestError(group.name, f"no leader accepted the request within {timeout:g} s")

    def _persist_soon(self, group: Group) -> None:
        # Once per group's life (the first leader), from a synchronous handler:
        # a small file, written in place. A failure only means the next root
        # start may hand out a bootstrap the replicas then ignore (their data
        # is not empty).
        try:
            _write_record(group.data_dir, group.record)
        except OSError as exc:
            self.log(f"root: {group.name}: could not save {RECORD_NAME}: {exc}")

    async def _save(self, group: Group, record: GroupRecord) -> None:
        group.record = record
        await trio.to_thread.run_sync(_write_record, group.data_dir, record)
        group.touch()


# --------------------------------------------------------------------------
# Files


def _names(group: str, ids: object) -> str:
    assert isinstance(ids, list | tuple)
    return ", ".join(replica_name(group, i) for i in ids)


def _bind_peer(path: Path) -> socket.socket:
    """Bind a replica's peer listener in the group's peer directory (ours alone)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(os.fspath(path))
        os.chmod(path, 0o666)  # the directory (0711, inside the 0700 tree) is the gate
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _empty(path: Path) -> bool:
    try:
        with os.scandir(path) as entries:
            return next(entries, None) is None
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _load_record(data_dir: Path, count: int) -> GroupRecord:
    """Read ``data_dir/group.json``, or create the record of a new group of ``count``."""
    path = data_dir / RECORD_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as exc:
        raise GroupRecordError(str(path), f"cannot be read: {exc}") from exc
    else:
        return GroupRecord.from_json(text, source=str(path))
    if not _empty(data_dir):
        raise GroupRecordError(
            str(data_dir),
            f"holds data but no {RECORD_NAME}: it belongs to a cell that was not replicated "
            "(or the record was lost); move it away to start the group empty",
        )
    record = GroupRecord.create(count)
    _write_record(data_dir, record)
    return record


def _write_record(data_dir: Path, record: GroupRecord) -> None:
    """Replace ``group.json`` atomically and durably (temp file, fsync, rename, dir fsync)."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = data_dir / f".{RECORD_NAME}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, record.to_json().encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, data_dir / RECORD_NAME)
    dir_fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def wipe_data_dir(path: Path) -> None:
    """Remove everything in a stopped replica's data directory (the directory stays)."""
    try:
        entries = list(path.iterdir())
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


__all__ = [
    "LEADER_TIMEOUT",
    "LeaderBusy",
    "RECORD_NAME",
    "REPLICA_INTENSITY",
    "REPLICA_PERIOD",
    "STEP_TIMEOUT",
    "Group",
    "GroupHandle",
    "Member",
    "NotLeaderHere",
    "PeerAdmin",
    "ReplicaAdmin",
    "Replicas",
    "wipe_data_dir",
]

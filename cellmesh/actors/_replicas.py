"""Replicated cells in the root: each group's sockets, slots, stats and status.

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

The root calls the manager's hooks: the group's start as a child of its
supervisor (:meth:`Replicas.start_group`: a
:class:`~cellmesh.actors._replicas_group.GroupHandle`, which supervises each
replica), each replica's env before a spawn (:meth:`Replicas.env_for`), its
``ReplicaStats`` (:meth:`Replicas.on_stats`: dropped when they lie),
readiness and exits, and the status rows (:meth:`Replicas.info`,
:meth:`Replicas.status`). Membership changes and wipes are
:class:`~cellmesh.actors._replicas_changes.MembershipChanges`'.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs
import trio

from ..config import Paths, check_mesh_cell_name, ensure_private_dir
from ..sandbox._bwrap import PEERS_DIR_INSIDE
from ..transport._sockets import bind_unix_listener
from ._cells import CellSlot, ReplicaPart, reason_text
from ._replicas_changes import MembershipChanges
from ._replicas_group import (
    RECORD_NAME,
    REPLICA_INTENSITY,
    REPLICA_PERIOD,
    Group,
    GroupHandle,
    Member,
    bind_peer,
    is_empty,
    load_record,
    write_record,
)
from .control import GroupStatus, ReplicaInfo, ReplicaStats
from .errors import RootRequestError, SupervisorEscalation
from .manifest import CellDecl
from .membership import GroupView, replica_env, replica_name, stats_problem
from .policy import AbnormalExit, ExitReason
from .supervisor import ChildFactory, SupervisorEvent


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
    inside_bwrap: bool = False
    #: A removed replica's log files (by stem) may go: the root keeps the newest.
    logs_gone: Callable[[str], None] = lambda _stem: None
    groups: dict[str, Group] = attrs.Factory(dict)
    changes: MembershipChanges = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.changes = MembershipChanges(host=self)

    # ------------------------------------------------------------ setup

    async def add_group(self, decl: CellDecl, *, name: str, supervisor: str) -> Group:
        """Bind the group's sockets, read (or create) its record, make its members' slots."""
        assert name == decl.name
        assert decl.replicas is not None
        check_mesh_cell_name(name)
        data_dir = self.paths.data_dir / name
        record = await trio.to_thread.run_sync(load_record, data_dir, decl.replicas)
        socket_path = self.paths.socket_path(name)
        listener = bind_unix_listener(socket_path, mode=0o666)
        listener.setblocking(False)
        peers_dir = self.paths.replica_peers(name)
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
                await self.add_member(group, i)
        except BaseException:
            await self._close_group(group)
            raise
        return group

    async def add_member(self, group: Group, replica: int) -> Member:
        """Bind ``replica``'s peer socket and make its slot ``X/<replica>``."""
        peer_path = self.paths.replica_peer(group.name, replica)
        peer = bind_peer(peer_path)
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
        # The group's code, not what is on disk now: only a swap deploys that (a grow
        # ran new members on edited code beside the old, past the swap's checks).
        running = next((m.slot for m in group.members.values() if m.slot.dna is not None), None)
        if running is not None:
            slot.dna, slot.dna_digest = running.dna, running.dna_digest
            slot.previous_dna, slot.previous_decl = running.previous_dna, running.previous_decl
        member = Member(id=replica, slot=slot)
        group.members[replica] = member
        return member

    async def drop_member(self, group: Group, m: Member, *, delete_data: bool) -> None:
        """Drop ``m``'s slot and peer socket, and with ``delete_data`` its data directory."""
        group.members.pop(m.id, None)
        await self.drop_slot(m.slot)
        m.part.peer_listener.close()
        with contextlib.suppress(OSError):
            m.part.peer_path.unlink()
        if delete_data:
            await trio.to_thread.run_sync(
                lambda: shutil.rmtree(m.part.data_dir, ignore_errors=True)
            )
            self.logs_gone(m.slot.stem)  # (ids are never reused: bounded like children's)
        group.touch()

    async def close(self) -> None:
        """Close every group's sockets (the root has dropped the slots already)."""
        for group in list(self.groups.values()):
            await self._close_group(group)

    async def _close_group(self, group: Group) -> None:
        for m in list(group.members.values()):
            await self.drop_member(group, m, delete_data=False)
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
            nursery.start_soon(self.changes.reconcile, group)

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
        return replica_env(part.id, group.record, paths, data_empty=is_empty(part.data_dir))

    def on_stats(self, slot: CellSlot, stats: ReplicaStats) -> None:
        """A replica's stats arrived on its umbilical (dropped when they lie or overflow)."""
        part = slot.replica
        if part is None or stats_problem(stats, part.id) is not None:
            return
        part.stats = stats
        part.stats_at = trio.current_time()
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

    def no_such_cell(self, name: str) -> RootRequestError | None:
        """Why the root has no cell ``name`` when it is a group (name one of its replicas);
        None when it is not one either."""
        group = self.groups.get(name)
        if group is None:
            return None
        members = ", ".join(replica_name(name, i) for i in group.members)
        return RootRequestError(name, f"is a replicated cell: name one replica ({members})")

    async def change(self, name: str, count: int) -> str:
        """Bring group ``name`` to ``count`` replicas (:class:`MembershipChanges`)."""
        return await self.changes.change(name, count)

    async def wipe(self, name: str) -> str:
        """Rebuild replica ``name`` (``X/i``) from its peers (:class:`MembershipChanges`)."""
        return await self.changes.wipe(name)

    def _persist_soon(self, group: Group) -> None:
        # Once per group's life (the first leader), from a synchronous handler:
        # a small file, written in place. A failure only means the next root
        # start may hand out a bootstrap the replicas then ignore (their data
        # is not empty).
        try:
            write_record(group.data_dir, group.record)
        except OSError as exc:
            self.log(f"root: {group.name}: could not save {RECORD_NAME}: {exc}")


__all__ = ["Replicas"]

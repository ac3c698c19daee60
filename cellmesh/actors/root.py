"""The Mycelium Root: the daemon that owns every cell's life.

Theory of operation
-------------------
:func:`serve_root` takes the root lock (``<socket_dir>/mitosis.lock``, an
exclusive ``flock`` holding the pid: a second root is refused with
:class:`~cellmesh.actors.errors.RootAlreadyRunning`), then:

1. binds every declared cell's listening socket itself (socket activation):
   ``Synapse.grow(name)`` connects at once whether or not the cell runs, and
   every process of the cell -- first start, restart, later a hot swap --
   receives the same listening socket as fd 3;
2. binds each cell's *umbilical* (``<socket_dir>/.umbilical/<name>/mitosis.sock``),
   bound into that cell's sandbox alone, so the root knows which cell speaks
   from the socket it speaks on;
3. serves the control socket ``$CELL_UMBILICAL`` for the operator, refusing
   any peer whose ``SO_PEERCRED`` uid is not the root's
   (:mod:`cellmesh.actors._operator` answers the requests);
4. checks that every declared cell's and template's code imports (one
   standby each, :mod:`cellmesh.actors._preflight`; else it stops and
   :func:`serve_root` raises :class:`~cellmesh.actors.errors.CellsCannotStart`), then
   runs the manifest's supervision tree (:class:`~cellmesh.actors.supervisor.Supervisor`,
   OTP semantics) with itself as the child factory: a cell child is a
   :class:`~cellmesh.actors._cells.CellInstance` (spawned through the sandbox
   backend, ready once it sends ``CellReady``), a supervisor child is a nested
   supervisor;
5. watches the listener of every cell that has no process (``on_demand``
   before first use, or stopped and not restarted): the first pending
   connection spawns it. One watcher per listener, so concurrent grows spawn
   the cell once (:mod:`cellmesh.actors._activation`).

A replicated cell (``replicas = N``) is a group of replica slots ``X/i`` run
by :mod:`cellmesh.actors._replicas` (its sockets, supervision, stats and
membership changes); the root's part is a few hooks marked "replicas".

The root ends when asked (``StopMesh``, SIGTERM): children stop in reverse
start order with their shutdowns, then every sandbox is destroyed and every
socket file removed. When the top supervisor escalates (its restart intensity
exceeded), the root stops everything the same way and :func:`serve_root`
raises :class:`~cellmesh.actors.errors.SupervisorEscalation`.
"""

from __future__ import annotations

import collections
import contextlib
import os
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import trio

from .._util import open_service_nursery
from ..config import (
    Paths,
    check_mesh_cell_name,
    ensure_private_dir,
)
from ..errors import CellmeshError
from ..sandbox import CellBackend, JsonlEventLog
from ..transport._sockets import bind_unix_listener
from ..transport.membrane import open_membrane
from . import _proc
from ._activation import Activation
from ._cells import (
    CellInstance,
    CellSlot,
    ReplicaPart,
    check_target,
    in_group_swap,
    manifest_key,
    may_link,
    reason_text,
    template_of,
    with_failure,
)
from ._dynamic import DYNAMIC, DynamicCells
from ._groupswap import GroupSwapper
from ._launch import Launcher
from ._logkeep import ChildLogs
from ._metrics import MeshMetrics, accept_stats
from ._operator import Operator
from ._post import CellDownPost, Recipient
from ._preflight import check_new_code, preload_mesh
from ._reload import reload_mesh
from ._replicas import Replicas
from ._rootlock import RootLock
from ._rootlog import StderrLog
from ._rootstart import prepare, sweep
from ._statusnotes import StatusNotes, child_name, slot_of, slots_text
from ._swap import MESSAGES as SWAP_MESSAGES
from ._swap import Swapper
from ._tasks import Background, kill_when_stuck
from ._tree import dynamic_spec, placed_before, supervisor_spec
from .control import (
    Ack,
    CellDown,
    CellReady,
    CellStats,
    Demonitor,
    Link,
    Monitor,
    MonitorRef,
    ReplicaStats,
    RestartRecord,
    StartChild,
    StatusReply,
    StopChild,
    SwapReport,
    Unlink,
    umbilical_limits,
)
from .dna import DnaCache
from .errors import (
    CellsCannotStart,
    ChildStartFailed,
    RootRequestError,
    SupervisorEscalation,
)
from .exitcause import version_text
from .lastwords import run_with_last_words
from .manifest import CellDecl, Manifest
from .membership import replica_stem
from .policy import (
    AbnormalExit,
    ChildSpec,
    ExitReason,
    Restart,
)
from .supervisor import ChildHandle, Supervisor, SupervisorChildHandle, SupervisorEvent
from .watches import Notify, Watches

# --------------------------------------------------------------------------
# The root.


@attrs.define(eq=False)
class Root:
    """The running root: slots, supervisors, monitors and links (module doc)."""

    manifest: Manifest
    paths: Paths
    backend: CellBackend
    dna: DnaCache
    log: Callable[[str], None]
    slots: dict[str, CellSlot] = attrs.Factory(dict)
    supervisors: dict[str, Supervisor] = attrs.Factory(dict)
    restart_log: collections.deque[RestartRecord] = attrs.field(init=False)
    started_at: float = attrs.Factory(time.monotonic)  # (uptimes: not the wall clock)
    escalation: SupervisorEscalation | None = None
    #: Set when declared cells' code did not import: the mesh was never started.
    cannot_start: CellsCannotStart | None = None
    #: Per-cell totals for Prometheus, when the root serves metrics.
    metrics: MeshMetrics | None = None
    #: Where the metrics endpoint listens (host, port), when it does.
    metrics_address: tuple[str, int] | None = None
    _top: Supervisor | None = None
    _nursery: trio.Nursery | None = None
    _launcher: Launcher = attrs.field(init=False)
    _replicas: Replicas = attrs.field(init=False)
    _swapper: Swapper = attrs.field(init=False)
    _group_swapper: GroupSwapper = attrs.field(init=False)
    _activation: Activation = attrs.field(init=False)
    _dynamic: DynamicCells = attrs.field(init=False)
    _operator: Operator = attrs.field(init=False)
    _tasks: Background = attrs.field(init=False)
    _post: CellDownPost = attrs.field(init=False)
    _watches: Watches = attrs.field(init=False)
    _child_logs: ChildLogs = attrs.field(init=False)
    _notes: StatusNotes = attrs.Factory(StatusNotes)
    _umbilical_closed: dict[str, trio.Event] = attrs.Factory(dict)  # per name, while served
    _stopping: bool = False

    def __attrs_post_init__(self) -> None:
        decl = self.manifest.root
        self.restart_log = collections.deque(maxlen=decl.restart_log)
        self._watches = Watches(max_monitors=decl.max_monitors, max_links=decl.max_links)
        self._child_logs = ChildLogs(self.paths.log_dir, running=self._runs_as)

    def _runs_as(self, stem: str) -> bool:
        """A slot writes to the files of ``stem`` (a name, or ``X..<id>``)."""
        return any(slot.stem == stem for slot in self.slots.values())

    @property
    def contained_failures(self) -> int:
        """Failures of background tasks and callbacks that were contained (and logged)."""
        return self._tasks.failures

    async def wait_celldowns_settled(self) -> None:
        """Return once every CellDown notice so far was delivered or dropped."""
        await self._post.wait_idle()

    # ------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[Root] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, supervise, serve; return after a stop (raise on escalation)."""
        try:
            # A setup error (a group's data dir, a socket path) leaves unwrapped: it is
            # the cause `cellmesh up`, the root's log and its last words must show.
            async with open_service_nursery() as nursery:
                self._nursery = nursery
                # Every background task goes through this: none can stop the root.
                self._tasks = Background(nursery, self.log)
                self._post = CellDownPost(
                    tasks=self._tasks, recipient=self._recipient, settled=self._watches.delivered,
                    log=self.log, concurrency=self.manifest.root.celldown_concurrency,
                )
                self._launcher = Launcher(
                    backend=self.backend, dna=self.dna, paths=self.paths,
                    root=self.manifest.root, tasks=self._tasks, socket_of=self._socket_of,
                    instances_of=self._instances_of, slots=self.slots,
                )
                self._swapper = Swapper(
                    backend=self.backend, launcher=self._launcher, dna=self.dna,
                    tasks=self._tasks, log=self.log, events=JsonlEventLog.for_paths(self.paths),
                    max_state=self.manifest.root.swap_max_state,
                    stopping=lambda: self._stopping,
                )
                self._activation = Activation(
                    manifest=lambda: self.manifest, slots=self.slots, supervisors=self.supervisors,
                    stopping=lambda: self._stopping, log=self.log, record=self._record,
                    settle=self._swapper.settle,
                )
                self._replicas = Replicas(
                    paths=self.paths, factory=self, add_slot=self._add_slot,
                    drop_slot=self._drop_slot, record=self._record, on_event=self._on_event,
                    retire=self._launcher.retire, log=self.log,
                    inside_bwrap=self.backend.name == "bwrap", logs_gone=self._child_logs.stopped,
                )
                self._launcher.replica_env = self._replicas.env_for
                self._group_swapper = GroupSwapper(
                    replicas=self._replicas, launcher=self._launcher, backend=self.backend,
                    tasks=self._tasks, log=self.log, events=JsonlEventLog.for_paths(self.paths),
                )
                self._dynamic = DynamicCells(
                    manifest=lambda: self.manifest, slots=self.slots,
                    supervisors=self.supervisors, add_slot=self._add_slot,
                    drop_slot=self._drop_slot,
                )
                for name, decl in self.manifest.cells.items():
                    add = self._replicas.add_group if decl.replicated else self._add_slot
                    await add(decl, name=name, supervisor=self.manifest.parent_of(name))
                self._operator = Operator(
                    paths=self.paths, backend=self.backend, slots=self.slots,
                    swapper=self._swapper, log=self.log, manifest=lambda: self.manifest,
                    status=self.status, pid_of=self.pid_of, request_stop=self.request_stop,
                    spawn=lambda decl: self._dynamic.start(decl, parent=None),
                    reload=lambda msg: reload_mesh(self, self._swapper, self._launcher, msg),
                    change_replicas=self.change_replicas, wipe_replica=self._replicas.wipe,
                    no_such_cell=self._replicas.no_such_cell,
                    is_group=lambda name: name in self._replicas.groups,
                    swap_group=self.swap_group, start_soon=self._tasks.start_soon,
                )
                await self._tasks.start(self._operator.serve, name="control socket", restart=True)
                problems = await preload_mesh(list(self.slots.values()), self.manifest.templates,
                                              self._launcher, self._add_slot, self._drop_slot)
                if problems:
                    self.cannot_start = CellsCannotStart(list(problems.values()), list(problems))
                    self.log(f"root: could not start the mesh: {self.cannot_start}")
                    nursery.cancel_scope.cancel()
                    await trio.sleep_forever()  # cancelled just above
                self._top = Supervisor(
                    supervisor_spec(self.manifest, self.manifest.top, top=True), self,
                    lambda event: self._on_event("root", event),
                )
                self.supervisors["root"] = self._top
                try:
                    await nursery.start(self._run_top)
                except SupervisorEscalation as exc:  # a child failed to start
                    self.escalation = exc
                    self.log(f"root: could not start the mesh: {exc}")
                    nursery.cancel_scope.cancel()
                else:
                    self.log(f"root: up (pid {os.getpid()}, {slots_text(self.slots.values())}, "
                             f"backend {self.backend.name})")
                    self._launcher.pruner.start(self._tasks)  # the DNA cache: docs/root.md
                    task_status.started(self)
        finally:
            self._nursery = None
            self._stopping = True
            with trio.CancelScope(shield=True):
                await self._close()
        if self.cannot_start is not None:
            raise self.cannot_start
        if self.escalation is not None:
            raise self.escalation

    async def _run_top(self, *, task_status: trio.TaskStatus[Supervisor]) -> None:
        assert self._top is not None and self._nursery is not None
        try:
            await self._top.run(task_status=task_status)
        except SupervisorEscalation as exc:
            if not self._top.started:
                raise  # out of nursery.start: run() reports it
            self.escalation = exc
            self.log(f"root: the top supervisor gave up ({exc}); stopping")
        finally:
            self._nursery.cancel_scope.cancel()

    def request_stop(self, timeout: float | None = None) -> None:
        """Stop every child in reverse start order; after ``timeout`` s, kill the rest."""
        if self._top is None or self._nursery is None:
            return  # not started, or already ended
        self._stopping = True
        for slot in self.slots.values():
            self._launcher.retire(slot)
        self._top.request_stop()
        if timeout is not None and self._nursery is not None:
            top = self._top

            def left() -> int:
                return sum(s.instance is not None and s.instance.state not in ("exited", "dormant")
                           for s in self.slots.values())

            def kill(count: int) -> None:
                self.log(f"root: no cell stopped in {timeout:g} s; killing the {count} left")
                top.kill()
                for slot in self.slots.values():
                    if slot.instance is not None:
                        slot.instance.kill()

            self._tasks.start_soon(kill_when_stuck, timeout, left, kill, name="forced stop")

    async def _close(self) -> None:
        for slot in list(self.slots.values()):
            await self._drop_slot(slot)
        await self._replicas.close()

    # ------------------------------------------------------------ slots

    async def _add_slot(
        self, decl: CellDecl, *, name: str, supervisor: str, parent: str | None = None,
        replica: ReplicaPart | None = None, shared: tuple[Path, socket.socket] | None = None,
    ) -> CellSlot:
        """Make the slot of ``name``: its socket (a replica: its group's, ``shared``),
        its umbilical, its activation watcher (not for a replica)."""
        assert self._nursery is not None
        if shared is None:
            check_mesh_cell_name(name)
            socket_path = self.paths.socket_path(name)
            # 0666 in the 0700 socket dir: reachable by sandboxed cells running as
            # another uid (the socket is bound into their sandbox), by nobody else.
            listener = bind_unix_listener(socket_path, mode=0o666)
            listener.setblocking(False)
        else:
            socket_path, listener = shared
        stem = name if replica is None else replica_stem(replica.group, replica.id)
        umbilical = self.paths.cell_umbilical(stem)
        udir = umbilical.parent
        ensure_private_dir(udir.parent)
        udir.mkdir(mode=0o700, exist_ok=True)
        slot = CellSlot(
            name=name, supervisor=supervisor, listener=listener, socket_path=socket_path,
            umbilical_path=umbilical, decl=decl, parent=parent, replica=replica,
            owns_listener=shared is None,
            key=manifest_key(self.manifest, name if replica is None else decl.name, decl),
        )
        self.slots[name] = slot
        try:
            if parent is not None:
                # A hard link to the child's socket in the directory bound into
                # the parent's sandbox: the parent reaches its children only
                # (and the cells whose `calls` list its template, below).
                self._launcher.grant(parent, name, socket_path)
                self._launcher.share(slot, list(self.slots.values()), on=True)
            await self._tasks.start(
                self._serve_umbilical, slot, name=f"umbilical of {name}", restart=True
            )
        except BaseException:
            await self._drop_slot(slot)
            raise
        if replica is None:  # a replicated cell is never started by a connection
            self._tasks.start_soon(
                self._activation.watch, slot, name=f"activation watcher of {name}", restart=True
            )
        return slot

    async def _drop_slot(self, slot: CellSlot) -> None:
        self.slots.pop(slot.name, None)
        self._watches.forget(slot.name)
        if self.metrics is not None:
            self.metrics.forget(slot.name)
        await self._launcher.destroy(slot)
        if slot.owns_listener:
            with contextlib.suppress(OSError):
                os.unlink(slot.socket_path)  # our 0700 directory: no one else binds here
        if slot.parent is not None:
            self._launcher.revoke(slot.parent, slot.name)
            self._launcher.share(slot, list(self.slots.values()), on=False)
        with contextlib.suppress(OSError):
            self._launcher.children_dir(slot.name).rmdir()
        if slot.owns_listener:
            with contextlib.suppress(ValueError):  # its watcher may wait on it; -1 once closed
                trio.lowlevel.notify_closing(slot.listener)
            slot.listener.close()
        if slot.log is not None:
            slot.log.close()
        if slot.parent is not None:
            self._child_logs.stopped(slot.name)  # bounded: a parent may churn names
        slot.touch()

    # ------------------------------------------------------------ ChildFactory

    async def start(self, spec: ChildSpec, nursery: trio.Nursery) -> ChildHandle:
        """Start the child ``spec`` describes (the supervisors' factory)."""
        kind = spec.args[0]
        if kind in {"supervisor", "dynamic"}:
            name = str(spec.args[1]) if kind == "supervisor" else DYNAMIC
            if name in self.supervisors:  # started again: its dynamic children ended
                await self._dynamic.forget_under(name)
            sup_spec = (
                supervisor_spec(self.manifest, self.manifest.supervisors[name])
                if kind == "supervisor" else dynamic_spec()
            )
            handle = await SupervisorChildHandle.start(
                sup_spec, self, nursery, on_event=lambda event: self._on_event(name, event)
            )
            self.supervisors[name] = handle.supervisor
            return handle
        if kind == "group":  # replicas
            return await self._replicas.start_group(str(spec.args[1]), nursery)
        if kind == "template":
            _, sup_name, template, child_name = spec.args[:4]
            slot = self.slots.get(str(child_name))
            if slot is None:
                slot = await self._add_slot(
                    attrs.evolve(self.manifest.templates[str(template)], name=str(child_name)),
                    name=str(child_name), supervisor=str(sup_name),
                )
                slot.child_id = spec.id
        else:
            slot = self.slots[str(spec.args[1])]
        return await self._start_instance(slot, nursery)

    async def _start_instance(self, slot: CellSlot, nursery: trio.Nursery) -> CellInstance:
        await self._swapper.settle(slot)  # a swap's process must be gone first
        await self._launcher.prepare(slot)
        instance = CellInstance(
            slot, self.backend, self._launcher.launch, self._instance_exited,
            self._instance_ready,
        )
        slot.instance = instance
        slot.stats = None
        if slot.on_demand and not slot.activated:
            nursery.start_soon(instance.run)
            self._launcher.ensure_standby(slot, busy=None)  # its first start will be quick
            slot.touch()
            return instance
        if slot.activated and slot.swap_phase != "restarting":  # (a group swap's: not one)
            slot.restarts += 1
        instance.start_process()
        nursery.start_soon(instance.run)
        await instance.wait_started()
        return instance

    def _instances_of(self, name: str) -> list[tuple[str, Path]] | None:
        if name not in self.manifest.templates:
            return None
        return [(s.name, s.socket_path) for s in self.slots.values() if template_of(s) == name]

    def _socket_of(self, name: str) -> Path | None:
        slot = self.slots.get(name)
        return self._replicas.socket_of(name) if slot is None else slot.socket_path

    def _on_event(self, supervisor: str, event: SupervisorEvent) -> None:
        with self._tasks.guard(f"event of supervisor {supervisor}"):
            slot = slot_of(self.slots, supervisor, event.child_id)
            self._notes.on_event(slot, event, mono=time.monotonic())  # for status
            self._log_event(supervisor, event)

    def _log_event(self, supervisor: str, event: SupervisorEvent) -> None:
        name = child_name(self.slots, supervisor, event.child_id)  # as status names it
        if event.kind in ("start_failed", "escalated", "delaying"):
            self.log(f"root: supervisor {supervisor}: {event.kind} {name} {event.detail}".rstrip())
        if event.kind == "start_failed" and not in_group_swap(self.slots.get(name)):
            reason = ChildStartFailed.reason_of(event.child_id, event.detail)
            self._record(name, f"failed to start: {reason}")

    def _record(self, cell: str, reason: str) -> None:
        self.restart_log.append(RestartRecord(at=time.time(), cell=cell, reason=reason))

    # ------------------------------------------------------------ exits, monitors, links

    def _instance_ready(self, instance: CellInstance) -> None:
        with self._tasks.guard(f"ready of {instance.slot.name}"):
            self._replicas.on_ready(instance.slot)
            if not self._stopping:  # (a standby that cannot be spawned is only logged)
                self._launcher.ensure_standby(instance.slot, busy=instance.cell_id)

    def _instance_exited(self, instance: CellInstance, reason: ExitReason) -> None:
        with self._tasks.guard(f"exit of {instance.slot.name}"):
            self._exited(instance, reason)

    def _exited(self, instance: CellInstance, reason: ExitReason) -> None:
        slot = instance.slot
        self._replicas.on_exit(slot, reason)
        text = reason_text(reason)
        failure = instance.failure
        if self.metrics is not None:
            self.metrics.observe_exit(slot, reason)
        swapping = in_group_swap(slot)
        if isinstance(reason, AbnormalExit):
            if not swapping:
                self._record(slot.name, text)
                slot.last_exit = (text, time.time())
            during = " during a swap" if swapping else ""
            self.log(f"root: cell {slot.name} exited abnormally{during}: {text}")
        if swapping:
            # A replica a swap stopped, or its new (or rolled-back) process failing: the
            # swap reports it; not a crash, not a CellDown, no link fires (docs/swap.md).
            return
        effects = self._watches.exited(
            slot.name, text, abnormal=isinstance(reason, AbnormalExit), is_running=self._running
        )
        for effect in effects:
            if isinstance(effect, Notify):
                self._notify(effect.watcher, with_failure(effect.down, failure))
            else:
                linked = self.slots[effect.name].instance
                if linked is None:
                    continue
                why = f"linked cell {effect.cause} failed"  # its exit is recorded with this
                with contextlib.suppress(CellmeshError):
                    self.backend.kill(linked.cell_id, as_crash=True, why=why)
        if (
            slot.name not in self.manifest.cells and slot.decl.restart is Restart.TEMPORARY
            and self._nursery is not None and not self._stopping
        ):
            # never restarted: free the name
            self._tasks.start_soon(self._dynamic.forget, slot, name=f"forget {slot.name}")
        if slot.children and self._nursery is not None and not self._stopping:
            for child in list(slot.children):
                self._tasks.start_soon(
                    self._dynamic.stop_child, slot, child, name=f"stop {child} (its parent ended)"
                )

    def _notify(self, watcher: str, down: CellDown) -> None:
        if watcher in self.slots and self._nursery is not None:
            self._post.post(watcher, down)
        else:
            self._watches.delivered(watcher)  # nobody to tell: it no longer counts

    def _recipient(self, watcher: str) -> Recipient | None:
        slot = self.slots.get(watcher)
        if slot is None or self._stopping:
            return None
        return Recipient(socket_path=slot.socket_path, timeout=slot.decl.start_timeout)

    def _running(self, name: str) -> bool:
        """``name`` has a process (starting or running) that a link could kill."""
        slot = self.slots.get(name)
        instance = None if slot is None else slot.instance
        return instance is not None and instance.state in ("starting", "running")

    def _is_alive(self, name: str) -> bool:
        """Whether ``name`` has a process (starting or running): a dormant on-demand cell
        has none yet, so a monitor of it gets ``noproc`` at once (docs/cells.md)."""
        slot = self.slots.get(name)
        return slot is not None and slot.instance is not None and slot.instance.state in (
            "starting", "running"
        )

    # ------------------------------------------------------------ reload, spawns

    async def start_declared(self, name: str, *, again: bool = False) -> None:
        """Bind and start manifest cell ``name`` (new in a reloaded manifest; ``again``:
        its slot is there, but it ended and its supervisor forgot it)."""
        decl = self.manifest.cells[name]
        spec = ChildSpec(id=name, restart=decl.restart, shutdown=decl.shutdown,
                         args=("cell", name))
        parent = self.manifest.parent_of(name)
        sup = self.supervisors[parent]
        before = placed_before(self.manifest, name, {c.child_id for c in sup.which_children()})
        if again:
            await sup.start_child(spec, before=before)
            return
        if self.metrics is not None:
            self.metrics.declare(name)  # its own label, as if declared at start
        slot = await self._add_slot(decl, name=name, supervisor=parent)
        try:
            await sup.start_child(spec, before=before)
        except BaseException:
            await self._drop_slot(slot)
            raise

    async def check_code(self, cells: Mapping[str, CellDecl],
                         templates: Mapping[str, CellDecl]) -> dict[str, str]:
        """Whether the code of cells and templates a reload adds imports (problems by name)."""
        return await check_new_code(cells, templates, self._launcher, self._add_slot,
                                    self._drop_slot)

    async def swap_group(self, name: str, timeout: float, grace: float,
                         rollback: bool = False) -> SwapReport:
        """Swap replicated cell ``name`` one replica at a time (``cellmesh swap``, a reload):
        :class:`cellmesh.actors._groupswap.GroupSwapper`."""
        return await self._group_swapper.swap(name, timeout=timeout, grace=grace,
                                              rollback=rollback)

    async def change_replicas(self, name: str, count: int) -> str:
        """Bring replicated cell ``name`` to ``count`` replicas, one server at a time
        (``cellmesh replicas``, a manifest reload); return what was done. See
        :meth:`cellmesh.actors._replicas.Replicas.change` for the refusals."""
        return await self._replicas.change(name, count)

    async def stop_declared(self, name: str) -> None:
        """Stop cell ``name`` for good and forget it (gone from a reloaded manifest)."""
        await self._dynamic.stop_slot(name)

    def pid_of(self, slot: CellSlot) -> int | None:
        """The pid of the slot's serving process (not of its standby), or None."""
        instance = slot.instance
        if not slot.created or instance is None or instance.state in ("dormant", "exited"):
            return None
        return self.backend.process_id(self._swapper.serving_id(slot) or instance.cell_id)

    # ------------------------------------------------------------ umbilicals

    async def _serve_umbilical(self, slot: CellSlot, *, task_status: trio.TaskStatus[None]) -> None:
        if self.slots.get(slot.name) is not slot:
            task_status.started()
            return  # the slot went while this server was being restarted
        # A slot of this name that just went may still be closing its umbilical (its
        # membrane drains): bind once it has, and again make the directory it removed.
        previous = self._umbilical_closed.get(slot.name)
        if previous is not None:
            await previous.wait()
        closed = self._umbilical_closed[slot.name] = trio.Event()
        slot.umbilical_path.parent.mkdir(mode=0o700, exist_ok=True)

        async def handle(msg: Any) -> Any:
            return await self._from_cell(slot, msg)

        try:
            async with open_membrane(
                "mitosis", handle, socket_path=slot.umbilical_path, socket_mode=0o666,
                log=self.log, drain_grace=0.5,
                **umbilical_limits(self.manifest.root.swap_max_state),
            ):
                os.chmod(slot.umbilical_path.parent, 0o711)
                task_status.started()
                # This slot, not its name: a child stopped and started again under
                # the same name is a new slot, which serves its own umbilical.
                while self.slots.get(slot.name) is slot:
                    await slot.changed.wait()
        finally:
            with contextlib.suppress(OSError):
                slot.umbilical_path.parent.rmdir()
            closed.set()
            if self._umbilical_closed.get(slot.name) is closed:
                del self._umbilical_closed[slot.name]

    async def _from_cell(self, slot: CellSlot, msg: Any) -> Any:
        self._notes.heard_from(slot, mono=time.monotonic())  # (status: silent_for)
        if isinstance(msg, CellStats):
            if not self._swapper.ignores_stats(slot, msg):
                slot.stats = stats = accept_stats(msg)  # bounded: cells are untrusted
                self._notes.stats_received(slot, at=time.time())  # top's rates divide by it
                if self.metrics is not None:
                    self.metrics.observe_stats(slot, self.pid_of(slot), stats)
            return None
        if isinstance(msg, ReplicaStats):
            self._replicas.on_stats(slot, msg)
            part = slot.replica
            if self.metrics is not None and part is not None and part.stats is msg:
                self.metrics.observe_leader(part.group, part.id, msg)  # kept: it was valid
            return None
        if isinstance(msg, CellReady):
            self._watches.set_trapping(slot.name, msg.trap_exits)
            if not self._swapper.claims_ready(slot, msg) and slot.instance is not None:
                slot.version = version_text(msg.version)
                first = not slot.instance.ready.is_set()
                slot.instance.mark_ready()
                if first:  # once per process: a cell repeating CellReady adds no lines
                    # The cell's log says which process serves (a standby only "started").
                    self._swapper.events.emit(slot.stem, "ready", {"pid": self.pid_of(slot)})
            return Ack(text="ok")
        if isinstance(msg, SWAP_MESSAGES):
            return await self._swapper.from_cell(slot, msg)
        if isinstance(msg, Monitor):
            check_target(msg.target)
            ref, effects = self._watches.monitor(
                slot.name, msg.target, alive=self._is_alive(msg.target)
            )
            for effect in effects:
                if isinstance(effect, Notify):
                    self._notify(effect.watcher, effect.down)
            return MonitorRef(ref=ref)
        if isinstance(msg, Demonitor):
            self._watches.demonitor(msg.ref, watcher=slot.name)
            return Ack(text="ok")
        if isinstance(msg, Link):
            check_target(msg.target)
            if not may_link(slot, msg.target):
                raise RootRequestError(
                    msg.target, f"{slot.name} may not link to it: a link kills both sides, "
                    f"so a cell links only to cells in its `calls`, its children and its parent",
                )
            if not self._is_alive(msg.target):
                raise RootRequestError(msg.target, "noproc: not running, cannot link to it")
            self._watches.link(slot.name, msg.target, trap_exits=msg.trap_exits)
            return Ack(text="ok")
        if isinstance(msg, Unlink):
            self._watches.unlink(slot.name, msg.target)
            return Ack(text="ok")
        if isinstance(msg, StartChild):
            return await self._dynamic.start_child_for(slot, msg)
        if isinstance(msg, StopChild):
            if msg.name not in slot.children:
                raise RootRequestError(msg.name, f"is not a child of {slot.name}")
            await self._dynamic.stop_child(slot, msg.name)
            return Ack(text="ok")
        raise RootRequestError(type(msg).__name__, "is not a cell request")

    # ------------------------------------------------------------ status

    def status(self) -> StatusReply:
        """Every cell's state and counters, the restart log (newest last); whether the
        root is stopping (its cells being stopped show ``stopping``)."""
        samples = _proc.scan()
        now = time.time()
        mono = time.monotonic()
        cells = []
        for slot in self.slots.values():
            cells.append(self._notes.annotate(slot, slot.report(
                self.pid_of(slot), samples, now=now, mono=mono, backend=self.backend.name,
                replica=self._replicas.info(slot),
            ), mono=mono, root_stopping=self._stopping))
        return StatusReply(
            root_pid=os.getpid(), uptime=mono - self.started_at,
            manifest=str(self.manifest.path), cells=cells, restart_log=list(self.restart_log),
            groups=self._replicas.status(), stopping=self._stopping,
        )


# --------------------------------------------------------------------------
# Entry point.


async def serve_root(
    manifest: Manifest,
    *,
    paths: Paths,
    env: Mapping[str, str] | None = None,
    log: Callable[[str], None] | None = None,
    metrics: tuple[str, int] | None = None,
    task_status: trio.TaskStatus[Root] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a root for ``manifest`` until it is stopped (see the module doc).

    With ``metrics`` (host, port) it serves Prometheus metrics there before
    the mesh starts (:mod:`._metrics_http`; bound address: ``metrics_address``).

    Raises :class:`RootAlreadyRunning` when another root owns
    ``paths.socket_dir``, :class:`CellsCannotStart` when declared cells'
    code does not import, :class:`SupervisorEscalation` when the top
    supervisor gives up, and :class:`~cellmesh.errors.ConfigError` naming
    ``--metrics`` when that address cannot be listened on.
    """
    log = log if log is not None else StderrLog()  # (a full disk loses lines, not the root)
    env = prepare(manifest, paths, os.environ if env is None else env, log)
    with RootLock.acquire(paths):
        backend, dna = await sweep(paths, env, log)  # what a killed root left (ours: locked)
        root = Root(manifest=manifest, paths=paths, backend=backend, dna=dna, log=log)
        if metrics is None:
            await run_with_last_words(root, str(manifest.path), task_status)
            return
        from ._metrics_http import run_with_metrics  # imports prometheus_client: on demand

        await run_with_metrics(root, metrics, run_with_last_words, task_status)


__all__ = [
    "DYNAMIC",
    "Root",
    "serve_root",
]

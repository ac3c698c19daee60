"""The root's control socket: the operator's requests, answered or refused in one line.

Theory of operation
-------------------
The root serves ``$CELL_UMBILICAL`` (``mitosis.sock``, mode 0600) for the
``cellmesh`` commands; only a peer whose ``SO_PEERCRED`` uid is the root's
own is admitted, before the hello. :class:`Operator` answers each request
(the proteins are in :mod:`cellmesh.actors.control`):

* ``StatusRequest`` -> ``StatusReply``;
* ``KillCell`` -> SIGKILL of the cell's serving process (during a hot swap,
  the version that serves); its supervisor reacts;
* ``StopMesh`` -> the root's ordered stop;
* ``SpawnCell`` -> an undeclared cell under the hidden ``~dynamic``
  supervisor, only with ``[root] allow_spawn = true``;
* ``SwapCell`` -> ``SwapReport`` (:mod:`cellmesh.actors._swap`; a replicated
  cell's: :mod:`cellmesh.actors._groupswap`; one replica alone is refused),
  ``ReloadManifest`` -> ``ReloadReport`` (:mod:`cellmesh.actors._reload`);
* ``ChangeReplicas`` / ``WipeReplica`` -> ``Ack`` once the replicated cell's
  membership change is done (:mod:`cellmesh.actors._replicas_changes`).

A request that changes the mesh (``SpawnCell``, ``ReloadManifest``,
``ChangeReplicas``, ``WipeReplica``) runs in a task of the root's, not in
the request's connection: when its client goes away (Ctrl-C), the change
carries on to its end, as a swap does, and the root's log says that and how
it ended. Cancelled with its connection, a wipe left its replica stopped and
out of the group, a ``replicas`` change stopped at an even size, and a
reload left a half-made standby slot holding its name.

A request the root refuses -- an operator error, that is any
:class:`~cellmesh.errors.CellmeshError` (no cell of that name, spawning is
off, a swap of the cell already in progress, a manifest a reload cannot
apply) -- is answered with :class:`~cellmesh.actors.control.Refused`: the
refusal's class name and one line, no traceback. Only a bug in the root
reaches the operator as a remote error carrying its traceback.

The operator desk owns nothing but its membrane: it reads the root's tables
and acts through the callables the root made it with.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from ..config import Paths, check_mesh_cell_name
from ..errors import CellmeshError
from ..sandbox import CellBackend
from ..transport.membrane import open_membrane
from ._cells import CellSlot
from ._rootlock import peer_uid_filter
from ._swap import Swapper
from .control import (
    CONTROL_LIMITS,
    Ack,
    ChangeReplicas,
    KillCell,
    Refused,
    ReloadManifest,
    ReloadReport,
    SpawnCell,
    StatusReply,
    StatusRequest,
    StopMesh,
    SwapCell,
    SwapReport,
    WipeReplica,
    swap_times_problem,
)
from .errors import RootRequestError, UnknownCell
from .manifest import CellDecl, Manifest
from .policy import Restart

#: A Refused answer's message is cut to this many characters.
MAX_REFUSAL: Final = 2000


@attrs.define(eq=False)
class Operator:
    """The root's answers on its control socket (see the module doc)."""

    paths: Paths
    backend: CellBackend
    slots: Mapping[str, CellSlot]
    swapper: Swapper
    log: Callable[[str], None]
    #: The manifest in force (a reload may replace it).
    manifest: Callable[[], Manifest]
    status: Callable[[], StatusReply]
    #: The pid of a slot's serving process, or None.
    pid_of: Callable[[CellSlot], int | None]
    request_stop: Callable[[float | None], None]
    #: Start an undeclared cell under ``~dynamic`` (it is never restarted).
    spawn: Callable[[CellDecl], Awaitable[Ack]]
    reload: Callable[[ReloadManifest], Awaitable[ReloadReport]]
    #: A replicated cell's membership change and a replica's wipe (what was done).
    change_replicas: Callable[[str, int], Awaitable[str]]
    wipe_replica: Callable[[str], Awaitable[str]]
    #: Why there is no cell ``name`` (a replicated cell's name says: name a replica).
    no_such_cell: Callable[[str], CellmeshError | None]
    #: ``name`` is a replicated cell, and its swap (name, timeout, grace, rollback).
    is_group: Callable[[str], bool]
    swap_group: Callable[[str, float, float, bool], Awaitable[SwapReport]]
    #: Starts a task of the root's (``Background.start_soon``: its failures contained).
    start_soon: Callable[..., None]
    #: When the reload in progress began (``trio.current_time()``), None if none runs.
    _reload_began: float | None = attrs.field(default=None, init=False)

    async def serve(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Serve the control socket until cancelled (the root's task, restarted on failure)."""
        async with open_membrane(
            "mitosis", self.answer, socket_path=self.paths.umbilical, socket_mode=0o600,
            accept_filter=peer_uid_filter(os.getuid()), log=self.log, drain_grace=1.0,
            **CONTROL_LIMITS,
        ):
            task_status.started()
            await trio.sleep_forever()

    async def answer(self, msg: Any) -> Any:
        """A control request's answer; an operator error (any CellmeshError) is a Refused."""
        try:
            return await self._handle(msg)
        except CellmeshError as exc:
            return Refused(error=type(exc).__name__, message=str(exc)[:MAX_REFUSAL])

    async def _handle(self, msg: Any) -> Any:
        if isinstance(msg, StatusRequest):
            return self.status()
        if isinstance(msg, KillCell):
            return self._kill(msg.name)
        if isinstance(msg, StopMesh):
            self.request_stop(msg.timeout)
            return Ack(text="stopping")
        if isinstance(msg, SpawnCell):
            return await self._carry_on(f"the spawn of {msg.name}", lambda: self._spawn(msg))
        if isinstance(msg, SwapCell):
            return await self._swap(msg)  # (a swap runs in a task of the swapper's)
        if isinstance(msg, ReloadManifest):
            if msg.dry_run:  # (changes nothing: needs no turn)
                return await self.reload(msg)
            return await self._carry_on("the reload", lambda: self._reload(msg))
        if isinstance(msg, ChangeReplicas):
            return await self._carry_on(
                f"the change of {msg.name} to {msg.count} replicas",
                lambda: self._ack(self.change_replicas(msg.name, msg.count)),
            )
        if isinstance(msg, WipeReplica):
            return await self._carry_on(
                f"the wipe of {msg.name}", lambda: self._ack(self.wipe_replica(msg.name))
            )
        raise RootRequestError(type(msg).__name__, "is not a control request")

    async def _reload(self, msg: ReloadManifest) -> ReloadReport:
        """One reload at a time: a second one would apply the same steps again beside
        the first (its new cells' standbys met the first's: "in use by a live membrane")."""
        if self._reload_began is not None:
            raise RootRequestError("reload", (
                f"another reload is in progress (began "
                f"{trio.current_time() - self._reload_began:.1f} s ago); wait for it to end, "
                "then reload again if the manifest changed meanwhile (nothing was changed)"))
        self._reload_began = trio.current_time()
        try:
            return await self.reload(msg)
        finally:
            self._reload_began = None

    @staticmethod
    async def _ack(text: Awaitable[str]) -> Ack:
        return Ack(text=await text)

    async def _carry_on(self, what: str, work: Callable[[], Awaitable[Any]]) -> Any:
        """``await work()`` in a task of the root's: if this request's handler is
        cancelled (its client went away), the work carries on, and its end is logged."""
        done = trio.Event()
        ended: list[tuple[bool, Any]] = []  # (True, reply) or (False, exception)
        orphan = False

        async def run() -> None:
            try:
                ended.append((True, await work()))
            except Exception as exc:  # (the handler raises it again: a refusal, or a bug)
                ended.append((False, exc))
            finally:
                done.set()
                if orphan and ended:
                    self.log(f"root: {what}, whose client went away, ended: "
                             f"{_ending(*ended[0])}")

        self.start_soon(run, name=what)
        try:
            await done.wait()
        except BaseException:
            if not done.is_set():
                orphan = True
                self.log(f"root: {what}: its client went away; it carries on in the root")
            raise
        if not ended:  # its task was cancelled: the root stops
            raise RootRequestError(what, "cut short: the root stops")
        ok, value = ended[0]
        if not ok:
            raise value
        return value

    async def _swap(self, msg: SwapCell) -> SwapReport:
        problem = swap_times_problem(msg.timeout, msg.grace)
        if problem is not None:
            raise RootRequestError(msg.name, f"cannot be swapped: {' '.join(problem)}")
        if self.is_group(msg.name):  # a replicated cell: one replica at a time
            return await self.swap_group(msg.name, msg.timeout, msg.grace, msg.rollback)
        slot = self._slot(msg.name)
        if slot.replica is not None:
            group = slot.replica.group
            raise RootRequestError(
                msg.name, f"is one replica of the replicated cell {group}: swap the group "
                f"(`cellmesh swap {group}`), which swaps its replicas one at a time "
                "(a replica alone on other code would apply the log differently)",
            )
        return await self.swapper.swap(
            slot, timeout=msg.timeout, grace=msg.grace, rollback=msg.rollback,
        )

    def _slot(self, name: str) -> CellSlot:
        slot = self.slots.get(name)
        if slot is None:
            raise self.no_such_cell(name) or UnknownCell(name, sorted(self.slots))
        return slot

    def _kill(self, name: str) -> Ack:
        slot = self._slot(name)
        instance = slot.instance
        pid = self.pid_of(slot)
        if instance is None or pid is None:
            raise RootRequestError(name, "is not running")
        self.backend.kill(self.swapper.serving_id(slot) or instance.cell_id, as_crash=True)
        return Ack(text=f"killed {name} (pid {pid})")

    async def _spawn(self, msg: SpawnCell) -> Ack:
        if not self.manifest().root.allow_spawn:
            raise RootRequestError(
                msg.name, "spawning undeclared cells is off (set [root] allow_spawn = true)"
            )
        check_mesh_cell_name(msg.name)
        if msg.name in self.slots:
            raise RootRequestError(msg.name, "a cell of that name exists")
        dna = Path(msg.dna)
        if not dna.is_absolute():
            raise RootRequestError(msg.name, f"dna path {msg.dna!r} must be absolute")
        # Manifest defaults, no grants; it is never restarted.
        return await self.spawn(CellDecl(
            name=msg.name, dna=dna, entry=msg.entry or None, restart=Restart.TEMPORARY
        ))


def _ending(ok: bool, value: Any) -> str:
    """One line for how a carried-on request ended: its reply, or its error."""
    if not ok:
        return f"failed: {type(value).__name__}: {value}"
    if isinstance(value, Ack):
        return value.text
    if isinstance(value, ReloadReport):
        return ("done" if value.ok else "a step failed") + ": " + "; ".join(value.lines)
    return repr(value)


__all__ = ["MAX_REFUSAL", "Operator"]

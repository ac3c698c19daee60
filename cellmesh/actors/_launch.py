"""Launching a cell's processes: the sandboxed cell, its log pipe, and its standby.

Theory of operation
-------------------
:meth:`Launcher.prepare` builds a slot's DNA entry and creates its sandboxed
cell on the backend -- twice when the cell keeps a standby: the running
process and the one that will replace it alternate between two backend ids
(``name`` and ``name..b``), so neither is ever torn down and re-created, and
the listening socket they share is never unlinked while either exists.

Every process gets the listening socket as fd 3, a "go" pipe as fd 4
(``CELL_GO_FD``), a report pipe as fd 5 (``CELL_REPORT_FD``: it says when
its code is imported and why it failed, :mod:`.exitcause`) and a pipe for
its stdout and stderr, pumped into the cell's rotating log. The runtime
imports everything it needs, then blocks on the go pipe
(:func:`cellmesh.actors.runtime.wait_for_go`).

* :meth:`Launcher.launch` starts serving: it hands over the standby if one
  is ready (one byte on its go pipe: the cost of a start becomes a pipe
  write, not an interpreter start and the imports), else spawns a fresh
  process and tells it to go at once.
* :meth:`Launcher.ensure_standby` spawns the next standby on the free id.
  The root calls it once a process is ready (so the standby's start-up
  never competes with the start it would speed up) and when a dormant
  cell is prepared. A standby that dies while it waits is forgotten; the
  next ready process brings another.
* :meth:`Launcher.preload` spawns a standby even for a cell that keeps
  none (``standby = false``): ``cellmesh up`` waits for every cell's
  standby to report that its code imported before it starts the mesh.
* :meth:`Launcher.retire` closes every standby's go pipe: they exit.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final

import attrs
import trio

from ..config import Paths
from ..sandbox import FIRST_PASSED_FD, CellBackend, CellSpec, NetGrant, WorkloadEnv
from ._cells import CellSlot, Standby
from ._reports import ReportPipe
from ._tasks import Background
from .dna import DnaCache
from .exitcause import REPORT_FD_ENV
from .logs import RotatingLog, pump_output
from .manifest import RootDecl

#: The runtime every cell process runs.
RUNTIME_MODULE: Final = "cellmesh.actors.runtime"
#: Where a cell's umbilical appears inside a bwrap sandbox.
UMBILICAL_INSIDE: Final = "/run/cell/mitosis.sock"
#: The go pipe is the second passed fd (the listener is the first).
GO_FD: Final = FIRST_PASSED_FD + 1
#: The report pipe is the third.
REPORT_FD: Final = FIRST_PASSED_FD + 2


@attrs.define(eq=False)
class Launcher:
    """Creates and spawns the processes of the root's cells (see the module doc)."""

    backend: CellBackend
    dna: DnaCache
    paths: Paths
    root: RootDecl
    #: Starts the standby watchers and log pumps (contained: none can stop the root).
    tasks: Background
    #: The socket of a cell a slot may call (None: not a cell of this root).
    socket_of: Callable[[str], Path | None]

    def children_dir(self, parent: str) -> Path:
        """Where the sockets of ``parent``'s dynamic children are linked (bound into it)."""
        return self.paths.socket_dir / ".children" / parent

    async def prepare(self, slot: CellSlot) -> None:
        """Build the DNA entry and create the sandboxed cell(s), once per slot."""
        if slot.created:
            return
        decl = slot.decl
        entry = await trio.to_thread.run_sync(self.dna.ensure, decl.dna)
        slot.dna_digest = entry.digest
        bwrap = self.backend.name == "bwrap"
        env = dict(decl.env)
        env["CELL_ENTRY"] = decl.entry or entry.name
        env["CELL_UMBILICAL"] = UMBILICAL_INSIDE if bwrap else str(slot.umbilical_path)
        env["CELL_GO_FD"] = str(GO_FD)
        env[REPORT_FD_ENV] = str(REPORT_FD)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        granted = [slot.umbilical_path]
        for callee in decl.calls:
            target = self.socket_of(callee)
            if target is not None:
                granted.append(target)
        children_dir = self.children_dir(slot.name) if decl.max_children > 0 else None
        if children_dir is not None:
            # 0711: a cell running as another uid may reach the sockets in it
            # (by name, not list them); the 0700 socket dir above keeps every
            # other host user out.
            children_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(children_dir, 0o711)
        network = decl.network
        spec = CellSpec(
            name=slot.name,
            argv=(sys.executable, "-m", RUNTIME_MODULE),
            env=WorkloadEnv(items=env),
            limits=decl.limits,
            secrets=decl.secrets,  # type: ignore[arg-type]  # attrs converter=tuple
            dna_dir=entry.root,
            data_dir=self.paths.data_dir / slot.name if decl.data else None,
            own_socket=slot.socket_path,
            granted_sockets=granted,
            children_dir=children_dir,
            allow_net=network == "host",
            net_grants=() if isinstance(network, str) else tuple(
                NetGrant(host=g.host, port=g.port) for g in network
            ),
        )
        created: list[str] = []
        try:
            for cell_id in slot.cell_ids:
                self.backend.create(attrs.evolve(spec, cell_id=cell_id))
                created.append(cell_id)
        except BaseException:
            for cell_id in created:
                with contextlib.suppress(Exception):
                    self.backend.destroy(cell_id, grace=0.0)
            raise
        slot.created = True

    async def destroy(self, slot: CellSlot) -> None:
        """Stop the slot's processes and remove every trace of its sandboxed cells."""
        self.retire(slot)
        if slot.created:
            slot.created = False
            for cell_id in slot.cell_ids:
                with contextlib.suppress(Exception):
                    await self.backend.destroy_async(cell_id, grace=1.0)
        for pipe in slot.reports.values():
            pipe.close()
        slot.reports.clear()

    # ------------------------------------------------------------ processes

    def launch(self, slot: CellSlot) -> tuple[str, int]:
        """Make a process of ``slot`` serve: the standby if ready, else a fresh one."""
        standby = slot.standby
        if standby is not None:
            slot.standby = None
            standby.scope.cancel()  # from now on the instance waits on this process
            try:
                if self.backend.process_id(standby.cell_id) is not None:
                    os.write(standby.go, b"g")
                    return standby.cell_id, standby.pid
            except OSError:
                pass  # it died just now: start a fresh one
            finally:
                os.close(standby.go)
        cell_id = self._free_id(slot)
        pid, go = self._spawn(slot, cell_id)
        try:
            os.write(go, b"g")
        finally:
            os.close(go)
        return cell_id, pid

    def preload(self, slot: CellSlot) -> ReportPipe | None:
        """A standby for ``slot`` whatever its ``standby`` key; its report pipe.

        None when the slot is not created or both its ids are busy.
        """
        self.ensure_standby(slot, busy=None, always=True)
        standby = slot.standby
        return None if standby is None else slot.reports.get(standby.cell_id)

    def ensure_standby(self, slot: CellSlot, *, busy: str | None, always: bool = False) -> None:
        """Spawn a standby for ``slot`` unless it has one (``busy``: the running id).

        Only for a cell that keeps one (``standby = true``), or ``always``.
        """
        if not (slot.decl.standby or always) or slot.standby is not None or not slot.created:
            return
        free = [
            i for i in slot.cell_ids if i != busy and self.backend.process_id(i) is None
        ]
        if not free:
            return
        pid, go = self._spawn(slot, free[0])
        standby = Standby(cell_id=free[0], pid=pid, go=go, scope=trio.CancelScope())
        slot.standby = standby
        self.tasks.start_soon(self._watch_standby, slot, standby, name=f"standby of {slot.name}")

    def retire(self, slot: CellSlot) -> None:
        """Tell the slot's standby it will not be needed (it exits)."""
        standby, slot.standby = slot.standby, None
        if standby is not None:
            standby.scope.cancel()
            with contextlib.suppress(OSError):
                os.close(standby.go)

    async def _watch_standby(self, slot: CellSlot, standby: Standby) -> None:
        if slot.standby is not standby:
            # Handed over (or retired) before this task first ran: its process
            # is the instance's to wait on now -- one waiter per pidfd.
            return
        with standby.scope:
            await self.backend.wait_async(standby.cell_id)
            if slot.standby is standby:  # it died while waiting: forget it
                slot.standby = None
                with contextlib.suppress(OSError):
                    os.close(standby.go)

    def _free_id(self, slot: CellSlot) -> str:
        for cell_id in slot.cell_ids:
            if self.backend.process_id(cell_id) is None:
                return cell_id
        return slot.cell_ids[0]  # spawn reports the one that still runs

    def _spawn(self, slot: CellSlot, cell_id: str) -> tuple[int, int]:
        """Spawn on ``cell_id``: listener as fd 3, go pipe as fd 4, output piped to the log.

        Runs in the Trio thread: the sandbox's parent-death signal is tied to
        the spawning thread. Returns the pid and the go pipe's write end.
        """
        go_read, go_write = os.pipe2(os.O_CLOEXEC)
        out_read, out_write = os.pipe2(os.O_CLOEXEC)
        report_read, report_write = os.pipe2(os.O_CLOEXEC)
        try:
            spawned = self.backend.spawn(
                cell_id, pass_fds=[slot.listener.fileno(), go_read, report_write],
                stdout=out_write, stderr=out_write,
            )
        except BaseException:
            os.close(go_write)
            os.close(out_read)
            os.close(report_read)
            raise
        finally:
            os.close(go_read)
            os.close(out_write)
            os.close(report_write)
        old = slot.reports.pop(cell_id, None)
        if old is not None:
            old.close()
        slot.reports[cell_id] = ReportPipe(report_read)
        self.tasks.start_soon(self._pump, slot, out_read, name=f"log pump of {slot.name}")
        return spawned.pid, go_write

    async def _pump(self, slot: CellSlot, fd: int) -> None:
        if slot.log is None:
            slot.log = RotatingLog(
                self.paths.log_dir, slot.name,
                max_bytes=self.root.log_max_bytes, keep=self.root.log_keep,
            )
        try:
            await pump_output(fd, slot.log)
        finally:
            os.close(fd)


__all__ = ["GO_FD", "REPORT_FD", "RUNTIME_MODULE", "UMBILICAL_INSIDE", "Launcher"]

"""Socket activation: start a cell that has no process when a connection waits for it.

Theory of operation
-------------------
The root binds every cell's listening socket itself (docs/root.md, "Socket
activation and spawn on demand"). One :meth:`Activation.watch` task per
cell sleeps while the cell has a process (starting or running) and
otherwise waits for the listener to become readable: a pending connection.
Then it starts the cell, if that is the root's to do:

* a dormant ``on_demand`` cell is activated (its instance spawns);
* a cell its supervisor stopped for good (a ``transient`` cell that ended
  normally, a ``temporary`` one, one stopped on request) is started again
  through that supervisor (``restart_child``, or ``start_child`` for a
  declared cell it has forgotten);
* while a supervisor is still starting, or about to restart the cell
  itself, the watcher only waits for the slot to change.

A start that fails refuses the connections waiting in the backlog rather
than spinning on them (their clients see the connection closed). The
watcher waits for a hot swap of the cell to finish first: the swap may be
re-making the cell's sandboxes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs
import trio

from ..errors import CellmeshError
from ._cells import CellSlot
from .errors import ChildAlreadyPresent, ChildRunning
from .manifest import Manifest
from .policy import ChildSpec, ChildStatus
from .supervisor import Supervisor


@attrs.define(eq=False)
class Activation:
    """The activation watchers of one root (see the module doc).

    It reads the root's tables (``slots``, ``supervisors``) and asks the root
    for what changes: the manifest in force, whether the root is stopping,
    the end of a swap of a cell (``settle``); ``log`` and ``record`` (the
    restart log) report a failed start.
    """

    slots: dict[str, CellSlot]
    supervisors: dict[str, Supervisor]
    manifest: Callable[[], Manifest]
    stopping: Callable[[], bool]
    settle: Callable[[CellSlot], Awaitable[None]]
    log: Callable[[str], None]
    record: Callable[[str, str], None]

    async def watch(self, slot: CellSlot) -> None:
        """Spawn the cell at the first pending connection while it has no process."""
        while slot.name in self.slots:
            changed = slot.changed
            instance = slot.instance
            if instance is not None and instance.state in ("starting", "running"):
                await changed.wait()
                continue
            try:
                await trio.lowlevel.wait_readable(slot.listener)
            except (trio.ClosedResourceError, OSError):
                return
            if self.stopping() or slot.name not in self.slots:
                return
            await self.settle(slot)  # its sandboxes may be re-made for new DNA
            instance = slot.instance
            if instance is not None and instance.state == "dormant":
                instance.activate()
                await changed.wait()
            elif instance is None or instance.state == "exited":
                await self._reactivate(slot)
            else:
                await changed.wait()

    async def _reactivate(self, slot: CellSlot) -> None:
        """A connection waits for a cell without a process: start it, if it is ours to start."""
        sup = self.supervisors.get(slot.supervisor)
        if sup is None or not sup.started:
            await slot.changed.wait()
            return
        info = next((i for i in sup.which_children() if i.child_id == slot.child_id), None)
        try:
            if info is not None and info.status is ChildStatus.STOPPED:
                await sup.restart_child(slot.child_id)
            elif info is None and slot.name in self.manifest().cells:
                decl = slot.decl
                await sup.start_child(ChildSpec(
                    id=slot.name, restart=decl.restart, shutdown=decl.shutdown,
                    args=("cell", slot.name),
                ))
            else:
                await slot.changed.wait()
        except (ChildRunning, ChildAlreadyPresent):
            await trio.lowlevel.checkpoint()  # its supervisor restarted it meanwhile
        except CellmeshError as exc:
            if self.stopping():
                return
            self.log(f"root: on-demand start of {slot.name} failed: {exc}")
            self.record(slot.name, f"on-demand start failed: {exc}")
            # Refuse what waits in the backlog rather than spinning on it.
            await _refuse_pending(slot)


async def _refuse_pending(slot: CellSlot) -> None:
    while True:
        try:
            conn, _ = slot.listener.accept()
        except (BlockingIOError, OSError):
            return
        conn.close()
        await trio.lowlevel.checkpoint()


__all__ = ["Activation"]

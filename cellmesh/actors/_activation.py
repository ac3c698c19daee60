"""Socket activation: start a cell when a connection waits for it and nothing else will.

Theory of operation
-------------------
The root binds every plain cell's listening socket itself, so a client's
connection waits in the listen backlog whether or not the cell runs.
:meth:`Activation.watch` (one task per slot, run by the root's background
tasks) sleeps while the cell has a process; when it has none, it waits for
the listener to become readable -- a connection is pending -- and then:

* a *dormant* instance (an ``on_demand`` cell before its first use) is
  activated: its process is spawned and accepts the connection;
* a cell whose supervisor has stopped it for good (a ``transient`` cell that
  ended normally, a ``temporary`` one that ended), or that was removed, is
  started again through that supervisor (:meth:`Activation.reactivate`);
* while a supervisor is starting, or about to restart the cell itself, the
  watcher only waits for the slot to change: the restart will accept.

One watcher per listener, so concurrent first connections start the cell
once. A start that fails refuses what waits in the backlog rather than
spinning on it. Replicas of a replicated cell have no watcher: their group
is never started by a connection. A watcher waits for a hot swap of its
cell to end first (``settle``: the swap may be re-making its sandboxes), and
reads the manifest in force (``manifest()``: a reload may replace it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import attrs
import trio

from ..errors import CellmeshError
from ._cells import CellSlot
from .errors import ChildAlreadyPresent, ChildRunning, SupervisorStopped
from .manifest import Manifest
from .policy import ChildSpec, ChildStatus
from .supervisor import Supervisor


@attrs.define(eq=False)
class Activation:
    """The root's activation watchers (module doc); reads the root's tables, never owns them."""

    manifest: Callable[[], Manifest]
    slots: Mapping[str, CellSlot]
    supervisors: Mapping[str, Supervisor]
    stopping: Callable[[], bool]
    log: Callable[[str], None]
    record: Callable[[str, str], None]
    settle: Callable[[CellSlot], Awaitable[None]]

    async def watch(self, slot: CellSlot) -> None:
        """Spawn the cell at the first pending connection while it has no process."""
        while self.slots.get(slot.name) is slot:  # (a name may be reused by a new slot)
            changed = slot.changed
            instance = slot.instance
            if instance is not None and instance.state in ("starting", "running"):
                await changed.wait()
                continue
            try:
                await trio.lowlevel.wait_readable(slot.listener)
            except (trio.ClosedResourceError, OSError):
                return
            if self.stopping() or self.slots.get(slot.name) is not slot:
                return
            await self.settle(slot)
            instance = slot.instance
            if instance is not None and instance.state == "dormant":
                instance.activate()
                await changed.wait()
            elif instance is None or instance.state == "exited":
                await self.reactivate(slot)
            else:
                await changed.wait()

    async def reactivate(self, slot: CellSlot) -> None:
        """A connection waits for a cell without a process: start it, if it is ours to start.

        Only a child its supervisor has stopped for good (or removed, for a
        declared cell) is started here; while a supervisor is starting, or
        about to restart the cell itself, the watcher just waits for the
        slot to change.
        """
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
            why = str(exc)
            if isinstance(exc, SupervisorStopped):  # say which, and what would start it
                why = (f"its supervisor {slot.supervisor} has stopped (it gave up or was shut "
                       f"down, and is not restarted); {slot.name} starts again with it")
            self.log(f"root: on-demand start of {slot.name} failed: {why}")
            self.record(slot.name, f"on-demand start failed: {why}")
            # Refuse what waits in the backlog rather than spinning on it.
            await refuse_pending(slot)


async def refuse_pending(slot: CellSlot) -> None:
    """Close every connection waiting in ``slot``'s backlog."""
    while True:
        try:
            conn, _ = slot.listener.accept()
        except (BlockingIOError, OSError):
            return
        conn.close()
        await trio.lowlevel.checkpoint()


__all__ = ["Activation", "refuse_pending"]

"""Cells outside the manifest's tree: dynamic children and control-API spawns.

Theory of operation
-------------------
A cell whose manifest entry has ``max_children > 0`` and ``templates`` may
start children from those templates (``StartChild`` on its umbilical:
:meth:`DynamicCells.start_child_for`, within its quota, named
``<parent>.<suffix>``); with ``[root] allow_spawn = true`` the operator may
start an undeclared cell (``SpawnCell``). Either way :meth:`DynamicCells.start`
makes the slot and starts the cell: a child of a template under the
manifest's ``simple_one_for_one`` supervisor of that template when there is
one (its intensity applies), else under the hidden one-for-one supervisor
:data:`DYNAMIC`. Children stop with their parent (:meth:`DynamicCells.stop_child`),
and so does a child still starting when its parent exits, once its start
completes; a temporary cell that ended is forgotten
(:meth:`DynamicCells.forget`), and so is every child of a supervisor that gave
up and is started again (:meth:`DynamicCells.forget_under`).

A parent's quota counts its children being started and being stopped too
(:attr:`DynamicCells.busy`): a name is taken there before the first await of
a start or a stop and given back in a ``finally``, so concurrent requests of
one cell cannot get past ``max_children`` between the check and the end of a
start (an audit's cell with ``max_children = 40`` started 60 at once), nor
start twice under one name.
docs/root.md, "Dynamic children".
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Final

import attrs

from ..config import check_mesh_cell_name
from ..errors import CellmeshError
from ._cells import CellSlot
from .control import Ack, StartChild
from .errors import RootRequestError
from .manifest import CellDecl, Manifest
from .policy import ChildSpec, Restart
from .supervisor import Supervisor

#: Name of the hidden supervisor of dynamic children and control-API spawns.
DYNAMIC: Final = "~dynamic"


@attrs.define(eq=False)
class DynamicCells:
    """Starts and stops the root's cells that are not in its manifest's tree (module doc).

    Reads the root's tables and acts through its slot table's callables; owns nothing.
    """

    manifest: Callable[[], Manifest]
    slots: Mapping[str, CellSlot]
    supervisors: Mapping[str, Supervisor]
    add_slot: Callable[..., Awaitable[CellSlot]]
    drop_slot: Callable[[CellSlot], Awaitable[None]]
    #: parent's name -> names of its children being started or stopped now
    #: (they count against its quota; not in its slot's ``children``).
    busy: dict[str, set[str]] = attrs.field(init=False, factory=dict)

    def in_use(self, parent: CellSlot) -> int:
        """How many of ``parent``'s quota are taken: children, and those being started
        or stopped."""
        return len(parent.children | self.busy.get(parent.name, set()))

    @contextlib.contextmanager
    def _busy(self, parent: CellSlot, name: str) -> Iterator[None]:
        """``name`` counts against ``parent``'s quota while the block runs (taken at
        once, without a checkpoint; given back however the block ends)."""
        names = self.busy.setdefault(parent.name, set())
        names.add(name)
        try:
            yield
        finally:
            names.discard(name)
            if not names and self.busy.get(parent.name) is names:
                del self.busy[parent.name]

    async def start(
        self, decl: CellDecl, *, parent: CellSlot | None, template: str | None = None
    ) -> Ack:
        """Start a cell that is not in the manifest's tree: a child or a control-API spawn.

        A child of ``template`` goes under the manifest's ``simple_one_for_one``
        supervisor of that template when there is one (its intensity applies),
        else under the hidden ``~dynamic`` supervisor.
        """
        pool = next(
            (s.name for s in self.manifest().supervisors.values()
             if template is not None and s.template == template),
            None,
        )
        sup = self.supervisors.get(pool or DYNAMIC)
        if sup is None:
            if pool is None:
                raise RootRequestError(decl.name, "this root has no dynamic supervisor")
            raise RootRequestError(decl.name, (
                f"the pool supervisor {pool!r} of template {template!r} is not running now "
                "(a supervisor starts after the cells listed before it: list the pool "
                "before a cell that starts children in on_start)"))
        slot = await self.add_slot(decl, name=decl.name, supervisor=pool or DYNAMIC,
                                    parent=None if parent is None else parent.name)
        try:
            if pool is not None:
                # args appended to the template's; the pool names the child worker-N
                slot.child_id = await sup.start_child((decl.name,))
            else:
                await sup.start_child(ChildSpec(
                    id=decl.name,
                    restart=decl.restart if parent is not None else Restart.TEMPORARY,
                    shutdown=decl.shutdown, args=("cell", decl.name),
                ))
        except BaseException:
            await self.drop_slot(slot)
            raise
        if parent is not None and self.slots.get(decl.name) is slot:
            # (a temporary child that already ended and was forgotten is not added)
            parent.children.add(decl.name)
        return Ack(text=decl.name)

    async def forget(self, slot: CellSlot) -> None:
        """A temporary cell ended for good: free its name (and its parent's count)."""
        if slot.parent is not None and slot.parent in self.slots:
            self.slots[slot.parent].children.discard(slot.name)
        if self.slots.get(slot.name) is slot:
            await self.drop_slot(slot)

    async def forget_under(self, supervisor: str) -> None:
        """Supervisor ``supervisor`` (a template's pool or ``~dynamic``) starts again
        after it gave up: the children it ran ended with its last run and are not
        restarted (as in OTP: a restarted supervisor has only its spec's children).
        Free their names and their parents' quota."""
        for slot in [s for s in self.slots.values() if s.supervisor == supervisor]:
            if slot.name not in self.manifest().cells:
                await self.forget(slot)

    async def stop_child(self, parent: CellSlot, name: str) -> None:
        """Stop ``parent``'s child ``name`` for good and forget it. It counts against
        ``parent``'s quota until it is gone."""
        parent.children.discard(name)
        with self._busy(parent, name):
            await self.stop_slot(name)
        parent.touch()

    async def stop_slot(self, name: str) -> None:
        """Stop cell ``name`` through its supervisor (not restarted) and drop its slot."""
        slot = self.slots.get(name)
        sup = self.supervisors.get(slot.supervisor if slot is not None else DYNAMIC)
        if sup is not None and slot is not None:
            with contextlib.suppress(CellmeshError):
                await sup.terminate_child(slot.child_id)
            with contextlib.suppress(CellmeshError):
                await sup.delete_child(slot.child_id)
        if slot is not None:
            await self.drop_slot(slot)

    async def start_child_for(self, slot: CellSlot, msg: StartChild) -> Ack:
        """Cell ``slot`` asks for a child from one of its templates (within its quota)."""
        decl = slot.decl
        if msg.template not in decl.templates:
            raise RootRequestError(
                slot.name, f"may not start template {msg.template!r} (allowed: "
                f"{', '.join(decl.templates) or 'none'})",
            )
        # No checkpoint from these checks until the name is busy (counted): a
        # concurrent request of the same cell sees it.
        if self.in_use(slot) >= decl.max_children:
            raise RootRequestError(
                slot.name, f"child quota reached ({decl.max_children} children)"
            )
        if not msg.suffix:
            raise RootRequestError(slot.name, "a child's suffix may not be empty (its name is "
                                   "<parent>.<suffix>)")
        name = check_mesh_cell_name(f"{slot.name}.{msg.suffix}", source="child name")
        if name in self.slots or any(name in names for names in self.busy.values()):
            raise RootRequestError(name, "a cell of that name exists")
        tmpl = self.manifest().templates[msg.template]
        asker = slot.instance  # (a swap keeps the instance: only an exit ends it)
        with self._busy(slot, name):
            ack = await self.start(
                attrs.evolve(tmpl, name=name), parent=slot, template=msg.template
            )
        if slot.instance is not asker or asker is None or asker.state == "exited":
            # The parent exited while its child started: its exit stopped the children
            # it had, not this one. A child does not outlive the parent that asked.
            await self.stop_child(slot, name)
            raise RootRequestError(name, f"{slot.name} exited while its child started; "
                                   "the child was stopped")
        return ack


__all__ = ["DYNAMIC", "DynamicCells"]

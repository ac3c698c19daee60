"""Before the mesh starts: every declared cell's and template's code must import.

:func:`preload_cells` starts one standby process per declared cell (on-demand
cells and cells with ``standby = false`` included) and waits, concurrently,
until each reports on its report pipe that its class imported, or why it
did not (:mod:`.exitcause`), or exits, or takes longer than its
``start_timeout``. It returns one line per cell that cannot start, naming
the manifest key (``cells.x.entry: module 'kv.nosuch' not found ...``); the
root refuses to start the mesh when there is any
(:class:`~cellmesh.actors.errors.CellsCannotStart`), so a bad on-demand
entry fails ``cellmesh up`` instead of the first call.

Nothing is wasted on success: an eager cell's first start hands over to the
standby that has just imported, a cell that keeps a standby keeps it; only
the standbys of on-demand cells with ``standby = false`` are retired again.

Templates (``[templates.X]``: dynamic children, pools) have no slot until a
cell starts a child; :func:`preload_mesh` gives each one a temporary slot
``X.preflight`` (a name no cell can have: no declared cell is named ``X``,
so no cell can have a child of that name) in the template's own sandbox
profile, checks it with the cells, and removes it again.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Final

import attrs
import trio

from ..errors import CellmeshError
from ._cells import CellSlot
from ._launch import Launcher
from .manifest import CellDecl

#: Suffix of a template's temporary check slot.
PREFLIGHT: Final = "preflight"
#: The supervisor path shown for check slots (they have none).
NO_SUPERVISOR: Final = "~preflight"


async def _check(slot: CellSlot, launcher: Launcher, problems: dict[str, str]) -> None:
    try:
        pipe = launcher.preload(slot)
    except CellmeshError as exc:  # the sandbox could not start it
        problems[slot.name] = f"{slot.key}: its process could not be started: {exc}"
        return
    if pipe is None:
        return  # nothing could be spawned now; its first start will tell
    timeout = slot.decl.start_timeout
    with trio.move_on_after(timeout) as scope:
        reports = await pipe.wait_loaded()
    if scope.cancelled_caught:
        problems[slot.name] = f"{slot.key}: its code did not import within {timeout:g} s"
    elif reports.failure is not None:
        problems[slot.name] = reports.failure.describe(slot.key)
    elif not reports.loaded:
        problems[slot.name] = (
            f"{slot.key}: its process ended before its code was imported "
            f"(see `cellmesh logs {slot.name}`)"
        )


async def preload_cells(slots: Sequence[CellSlot], launcher: Launcher) -> dict[str, str]:
    """Start a standby of each slot and wait until each imported its code (module doc).

    Returns the problems, cell name -> one line, in ``slots`` order (empty:
    all imported). Slots are prepared (DNA, sandbox) one after the other, their
    processes then import concurrently, at most twice the CPU count at a time.
    """
    problems: dict[str, str] = {}
    limiter = trio.CapacityLimiter(max(2, 2 * (os.cpu_count() or 1)))

    async def check(slot: CellSlot) -> None:
        async with limiter:  # no fork storm for a large mesh
            await _check(slot, launcher, problems)

    async with trio.open_nursery() as nursery:
        for slot in slots:
            await launcher.prepare(slot)
            nursery.start_soon(check, slot)
    if not problems:
        for slot in slots:
            if slot.on_demand and not slot.decl.standby:
                launcher.retire(slot)
    return {s.name: problems[s.name] for s in slots if s.name in problems}


async def preload_mesh(
    slots: Iterable[CellSlot],
    templates: Mapping[str, CellDecl],
    launcher: Launcher,
    add_slot: Callable[..., Awaitable[CellSlot]],
    drop_slot: Callable[[CellSlot], Awaitable[None]],
) -> dict[str, str]:
    """:func:`preload_cells` for the cells and a temporary slot of every template.

    A problem is reported once: the replicas of a replicated cell share its
    code and its manifest key, so they fail with the same line (the first
    replica's name is kept).
    """
    checks: list[CellSlot] = []
    try:
        for template, decl in templates.items():
            name = f"{template}.{PREFLIGHT}"
            checks.append(await add_slot(attrs.evolve(decl, name=name), name=name,
                                         supervisor=NO_SUPERVISOR))
        problems = await preload_cells([*slots, *checks], launcher)
        distinct: dict[str, str] = {}
        for name, line in problems.items():
            if line not in distinct.values():
                distinct[name] = line
        return distinct
    finally:
        for slot in checks:
            await drop_slot(slot)


async def check_new_code(
    cells: Mapping[str, CellDecl],
    templates: Mapping[str, CellDecl],
    launcher: Launcher,
    add_slot: Callable[..., Awaitable[CellSlot]],
    drop_slot: Callable[[CellSlot], Awaitable[None]],
) -> dict[str, str]:
    """Before a reload adds ``cells`` and new or changed ``templates``: does their code import?

    Each gets a temporary slot ``X.preflight`` (no cell of that name can
    exist: ``X`` is new or a template), checked as :func:`preload_cells`
    does and removed again. Returns the problems, name -> one line naming
    the manifest key (``cells.X.entry: ...``).
    """
    checks: list[CellSlot] = []
    named: dict[str, str] = {}
    try:
        for section, decls in (("cells", cells), ("templates", templates)):
            for name, decl in decls.items():
                temp = f"{name}.{PREFLIGHT}"
                slot = await add_slot(attrs.evolve(decl, name=temp), name=temp,
                                      supervisor=NO_SUPERVISOR)
                slot.key = f"{section}.{name}"
                checks.append(slot)
                named[temp] = name
        problems = await preload_cells(checks, launcher)
        return {named[temp]: line for temp, line in problems.items()}
    finally:
        for slot in checks:
            await drop_slot(slot)


__all__ = ["NO_SUPERVISOR", "PREFLIGHT", "check_new_code", "preload_cells", "preload_mesh"]

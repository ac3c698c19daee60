"""Before the mesh starts: every declared cell's code must import.

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
"""

from __future__ import annotations

from collections.abc import Sequence

import trio

from ..errors import CellmeshError
from ._cells import CellSlot
from ._launch import Launcher


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
    processes then import concurrently.
    """
    problems: dict[str, str] = {}
    async with trio.open_nursery() as nursery:
        for slot in slots:
            await launcher.prepare(slot)
            nursery.start_soon(_check, slot, launcher, problems)
    if not problems:
        for slot in slots:
            if slot.on_demand and not slot.decl.standby:
                launcher.retire(slot)
    return {s.name: problems[s.name] for s in slots if s.name in problems}


__all__ = ["preload_cells"]

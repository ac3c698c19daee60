"""open_cell: a cell whose lifetime is a Trio ``async with`` block.

Structured concurrency across processes: the block owns the cell. On exit --
normal, by exception, or by cancellation -- the cell is destroyed (SIGTERM,
``grace`` seconds, then SIGKILL) inside a shielded scope, so no cell ever
outlives the task that opened it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio

from ._backend import CellBackend, SpawnedCell
from ._spec import CellSpec


@asynccontextmanager
async def open_cell(
    backend: CellBackend,
    spec: CellSpec,
    *,
    pass_fds: Sequence[int] = (),
    stdout: int | None = None,
    stderr: int | None = None,
    grace: float = 5.0,
) -> AsyncIterator[SpawnedCell]:
    """Create and spawn ``spec`` on ``backend``; destroy it when the block exits.

    Inside the block, ``await backend.wait_async(spec.cell_id)`` waits for the
    process. The teardown report is discarded; use the backend directly when
    it matters.
    """
    backend.create(spec)
    try:
        yield backend.spawn(spec.cell_id, pass_fds=pass_fds, stdout=stdout, stderr=stderr)
    finally:
        with trio.CancelScope(shield=True):
            await backend.destroy_async(spec.cell_id, grace=grace)


__all__ = ["open_cell"]

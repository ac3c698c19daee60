"""A root daemon served inside the caller's Trio run, for tests and benchmarks.

:func:`open_root` writes a manifest into a home directory, starts
:func:`cellmesh.actors.root.serve_root` on it with the given sandbox and
yields the running :class:`~cellmesh.actors.root.Root`. The block ends early
(by cancellation) when the root ends on its own (a ``StopMesh``, an
escalation: then the escalation propagates); leaving the block stops the root
and waits until every cell process is gone.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from ..actors.manifest import parse_manifest
from ..actors.root import Root, serve_root
from ..config import Paths


def mesh_env(home: Path, sandbox: str) -> dict[str, str]:
    """The environment of a root on ``home`` (``CELL_HOME``) with ``sandbox``."""
    return {
        "CELL_HOME": str(home),
        "CELL_SANDBOX": sandbox,
        "PATH": os.environ.get("PATH") or "/usr/bin:/bin",
    }


@asynccontextmanager
async def open_root(
    home: Path,
    toml: str,
    *,
    sandbox: str = "host",
    log: Callable[[str], None] | None = None,
    stop_timeout: float = 5.0,
    metrics: tuple[str, int] | None = None,
) -> AsyncIterator[Root]:
    """Serve the manifest ``toml`` (written to ``home/cellmesh.toml``) for the block.

    Keep ``home`` short (e.g. under /tmp): Unix socket paths are limited to
    107 bytes. ``metrics`` (host, port) serves the Prometheus endpoint too
    (``root.metrics_address`` is where; port 0 picks a free one).
    """
    path = home / "cellmesh.toml"
    path.write_text(toml)
    manifest = parse_manifest(toml, path=path)
    env = mesh_env(home, sandbox)
    paths = Paths.from_env(env)
    async with trio.open_nursery() as nursery:

        async def run(task_status: trio.TaskStatus[Root]) -> None:
            try:
                await serve_root(
                    manifest, paths=paths, env=env, log=log or (lambda _: None),
                    metrics=metrics, task_status=task_status,
                )
            finally:
                nursery.cancel_scope.cancel()  # the root ended: so does the block

        root: Root = await nursery.start(run)
        try:
            yield root
        finally:
            root.request_stop(stop_timeout)


__all__ = ["mesh_env", "open_root"]

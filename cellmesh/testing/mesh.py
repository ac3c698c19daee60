"""A root daemon served inside the caller's Trio run, for tests and benchmarks.

:func:`open_root` writes a manifest into a home directory, starts
:func:`cellmesh.actors.root.serve_root` on it with the given sandbox and
yields the running :class:`~cellmesh.actors.root.Root`; :func:`open_mesh`
serves a manifest file where it is, on a fresh private home (the fixture
for a user's own mesh tests, docs/testing.md). The block ends early
(by cancellation) when the root ends on its own: an escalation then
propagates, a clean stop (a ``StopMesh``) raises :class:`MeshStopped`. An
error of the block itself comes out as it is (not in an exception group).
Leaving the block stops the root and waits until every cell process is gone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from ..actors.errors import RootError, SupervisorEscalation
from ..actors.manifest import Manifest, load_manifest, parse_manifest
from ..actors.root import Root, serve_root
from ..config import Paths


class MeshStopped(RootError):
    """The root of an :func:`open_mesh` / :func:`open_root` block stopped on its own,
    cleanly, while the block ran: the block was cancelled and did not finish (so a test
    cannot pass without running its assertions). A test that stops the mesh itself
    expects it: ``with pytest.raises(MeshStopped)``."""


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

    DNA paths in ``toml`` are relative to ``home``. Keep ``home`` short (e.g.
    under /tmp): Unix socket paths are limited to 107 bytes. ``metrics``
    (host, port) serves the Prometheus endpoint too (``root.metrics_address``
    is where; port 0 picks a free one).
    """
    path = home / "cellmesh.toml"
    path.write_text(toml)
    async with _serve(home, parse_manifest(toml, path=path), sandbox=sandbox, log=log,
                      stop_timeout=stop_timeout, metrics=metrics) as root:
        yield root


@asynccontextmanager
async def open_mesh(
    manifest: str | os.PathLike[str],
    *,
    sandbox: str = "host",
    log: Callable[[str], None] | None = None,
    stop_timeout: float = 5.0,
    metrics: tuple[str, int] | None = None,
) -> AsyncIterator[Root]:
    """Serve the manifest file ``manifest`` as it is, on a fresh private home, for the block.

    The manifest and its DNA stay where they are (DNA paths relative to the
    manifest's directory, as for ``cellmesh up``); sockets, the DNA cache and
    logs go to a new directory under /tmp (short, for socket paths), removed
    afterwards. This is the fixture of a user's own mesh tests (docs/testing.md).
    """
    path = Path(manifest).resolve()
    parsed = load_manifest(path)
    home = Path(tempfile.mkdtemp(prefix="cm-", dir="/tmp"))
    try:
        async with _serve(home, parsed, sandbox=sandbox, log=log, stop_timeout=stop_timeout,
                          metrics=metrics) as root:
            yield root
    except (BaseExceptionGroup, RootError, SupervisorEscalation) as exc:
        # The root's own messages say "see `cellmesh logs X`": not once this home is gone.
        if not isinstance(exc, MeshStopped):
            exc.add_note(f"open_mesh removed its private home {home} with the cells' logs; "
                         "pass log=print to see the root's log lines as they are written")
        raise
    finally:
        shutil.rmtree(home, ignore_errors=True)


@asynccontextmanager
async def _serve(
    home: Path,
    manifest: Manifest,
    *,
    sandbox: str,
    log: Callable[[str], None] | None,
    stop_timeout: float,
    metrics: tuple[str, int] | None,
) -> AsyncIterator[Root]:
    env = mesh_env(home, sandbox)
    paths = Paths.from_env(env)
    leaving = False
    ended_first = False
    failed: Exception | None = None
    async with trio.open_nursery() as nursery:

        async def run(task_status: trio.TaskStatus[Root]) -> None:
            nonlocal ended_first
            try:
                await serve_root(
                    manifest, paths=paths, env=env, log=log or (lambda _: None),
                    metrics=metrics, task_status=task_status,
                )
            finally:
                ended_first = not leaving
                nursery.cancel_scope.cancel()  # the root ended: so does the block

        root: Root = await nursery.start(run)
        try:
            yield root
        except Exception as exc:  # the block's own error: raised as it is, not in a group
            failed = exc
        finally:
            leaving = True
            root.request_stop(stop_timeout)
    if failed is not None:
        raise failed
    if ended_first:  # it stopped cleanly (an error would have propagated above)
        raise MeshStopped(
            "the mesh stopped while the block ran (a StopMesh, `cellmesh down`, a signal): "
            "the rest of the block did not run"
        )


__all__ = ["MeshStopped", "mesh_env", "open_mesh", "open_root"]

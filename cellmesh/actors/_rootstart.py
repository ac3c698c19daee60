"""What a root does before it runs its mesh: checks, its sandbox choice, and sweeping up.

:func:`prepare` checks the manifest against the host (its code paths, its
socket paths' lengths), creates the home and chooses the sandbox backend
(``CELL_SANDBOX`` over the manifest's ``[root] sandbox``, said in the log).

:func:`sweep` runs under the root lock, before any cell: what a root of this
socket dir left when it was killed is ours to remove. The DNA cache's
half-built and half-deleted directories, the sandboxes' runtime directories
and cgroup leaves (:meth:`~cellmesh.sandbox.CellBackend.sweep_stale`), and
the socket dir's per-cell directories the root makes: ``.dna/<cell>/`` (hard
links to the cache's files: they kept the disk space of code the cache had
pruned, for every cell no longer declared), ``.umbilical/<cell>/``,
``.children/<cell>/`` and ``.replicas/<group>/`` (peer sockets). Cell
sockets are left: a membrane of the user's may share the directory (the root
replaces the sockets of the cells it declares).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

import trio

from ..config import Paths, ensure_home
from ..sandbox import CellBackend, select_backend
from ._nofile import raise_open_files
from .dna import DnaCache, force_rmtree
from .manifest import Manifest

__all__ = ["RUN_DIRS", "prepare", "sweep", "sweep_run_dirs"]

#: The socket dir's directories that only a root makes (one subdirectory per cell).
RUN_DIRS: Final = (".dna", ".umbilical", ".children", ".replicas")


def prepare(
    manifest: Manifest, paths: Paths, env: Mapping[str, str], log: Callable[[str], None]
) -> dict[str, str]:
    """Check ``manifest`` on this host and create the home; the env the root runs
    with (``CELL_SANDBOX`` set from the manifest when the env has none)."""
    env = dict(env)
    chosen = manifest.root.sandbox
    if chosen is not None and not env.get("CELL_SANDBOX"):
        env["CELL_SANDBOX"] = chosen
    elif chosen is not None and env["CELL_SANDBOX"] != chosen:
        log(f"CELL_SANDBOX={env['CELL_SANDBOX']} takes precedence over the manifest's "
            f"[root] sandbox = {chosen!r}")
    manifest.check_paths()
    manifest.check_sockets(paths)
    ensure_home(paths)
    if (short := raise_open_files(manifest)) is not None:
        log(short)
    return env


async def sweep(
    paths: Paths, env: Mapping[str, str], log: Callable[[str], None]
) -> tuple[CellBackend, DnaCache]:
    """Under the root lock: sweep up after a killed root (module doc); the backend
    and DNA cache the root runs with."""
    backend = select_backend(env, paths=paths)
    dna = DnaCache.from_paths(paths)
    await trio.to_thread.run_sync(dna.sweep_stale)
    swept = await trio.to_thread.run_sync(backend.sweep_stale)
    swept += await trio.to_thread.run_sync(sweep_run_dirs, paths.socket_dir)
    if swept:
        log(f"removed {len(swept)} leftovers of a previous root: {', '.join(swept[:4])}"
            + (" ..." if len(swept) > 4 else ""))
    return backend, dna


def sweep_run_dirs(socket_dir: Path) -> list[str]:
    """Remove what is in ``socket_dir``'s :data:`RUN_DIRS` (a root that stopped left
    them empty); the names removed, as ``.dna/<cell>``."""
    removed: list[str] = []
    for name in RUN_DIRS:
        top = socket_dir / name
        try:
            entries = sorted(os.listdir(top))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            force_rmtree(top / entry)
            removed.append(f"{name}/{entry}")
    return removed

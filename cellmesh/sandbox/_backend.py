"""The CellBackend contract every sandbox backend (bwrap, host, stub) honours.

Lifecycle of one cell id: ``create(spec)`` -> ``spawn(id)`` -> ``wait(id)``
(-> ``spawn(id)`` again to restart) -> ``destroy(id)``. Invariants:

* ``create`` rejects an empty id and an id that is already live
  (:class:`~cellmesh.sandbox.errors.DuplicateCell`); no two live cells share
  an id. Host-side state (cgroup leaf, private runtime dir) is made here.
* ``spawn`` starts the cell's one process; a second ``spawn`` while it runs
  raises :class:`~cellmesh.sandbox.errors.CellRunning`. Secrets are resolved
  here (fresh, TTL-bound) and delivered inside the sandbox.
* ``wait`` returns the classified :class:`ExitStatus` (exit, crash, limit,
  stop) and records an ``exited`` event exactly once per process.
* ``destroy`` stops a running process (TERM, then KILL after ``grace``),
  revokes every secret held for the cell, removes every host-side trace
  (runtime dir, cgroup leaves, and its ``own_socket`` file -- unless another
  live cell declares the same socket, as the new version does during a hot
  swap: create the new version *before* destroying the old) and rejects an
  unknown id
  (:class:`~cellmesh.sandbox.errors.UnknownCell`). After it returns the id is
  free again.
* ``terminate`` / ``kill`` signal the running process without tearing
  the cell down (a supervisor's shutdown, then ``spawn`` again); neither
  blocks.
* ``tracked()`` is a read-only view: id -> :class:`CellHandle` of live cells.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import attrs

from ._spec import CellSpec
from ._status import ExitStatus


@attrs.frozen(kw_only=True)
class CellHandle:
    """What a backend made for one live cell (host-side facts, no secrets)."""

    cell_id: str
    name: str
    backend: str
    cgroup_paths: tuple[Path, ...] = ()
    runtime_dir: Path | None = None
    limits: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class SpawnedCell:
    """The process ``spawn`` started: ``pid`` of the direct child, ``pidfd`` (None for stub).

    From Trio, ``await trio.lowlevel.wait_readable(pidfd)`` (or
    ``backend.wait_async(cell_id)``) sleeps until it exits; then
    ``backend.wait(cell_id)`` returns at once.
    """

    cell_id: str
    pid: int
    pidfd: int | None
    stdin: int | None = None


@attrs.frozen(kw_only=True)
class TeardownReport:
    """What ``destroy`` did: ``clean`` is False when the process had to be killed."""

    cell_id: str
    clean: bool
    exit: ExitStatus | None
    removed: tuple[str, ...]
    secrets_revoked: int
    tracked_after: int


class CellBackend(Protocol):
    """A sandbox backend: creates, spawns, waits for and destroys isolated cells."""

    @property
    def name(self) -> str:
        """``"bwrap"``, ``"host"`` or ``"stub"``."""
        ...

    def create(self, spec: CellSpec) -> CellHandle:
        """Register a cell and make its host-side state; see the module contract."""
        ...

    def spawn(
        self,
        cell_id: str,
        *,
        pass_fds: Sequence[int] = (),
        stdout: int | None = None,
        stderr: int | None = None,
        keep_stdin: bool = False,
    ) -> SpawnedCell:
        """Start the cell's process; ``pass_fds[i]`` appears in it as fd ``3 + i``."""
        ...

    def wait(self, cell_id: str, timeout: float | None = None) -> ExitStatus:
        """Block until the cell's process exits (``TimeoutError`` after ``timeout``)."""
        ...

    async def wait_async(self, cell_id: str) -> ExitStatus:
        """Wait from Trio without blocking the event loop."""
        ...

    def destroy(self, cell_id: str, *, grace: float = 5.0) -> TeardownReport:
        """Stop the cell if running, revoke its secrets, remove every host-side trace."""
        ...

    async def destroy_async(self, cell_id: str, *, grace: float = 5.0) -> TeardownReport:
        """:meth:`destroy` from Trio: waits for the grace period without blocking."""
        ...

    def tracked(self) -> Mapping[str, CellHandle]:
        """Live cells: id -> handle (a read-only snapshot)."""
        ...

    def sweep_stale(self) -> list[str]:
        """Kill and remove the host-side traces (cgroup leaves, runtime dirs) an
        earlier backend of the same socket dir left behind -- a root that crashed --
        keeping those of the cells this one tracks; return what was removed."""
        ...

    def terminate(self, cell_id: str) -> None:
        """SIGTERM the running process (no-op when not running); its exit is a ``stop``."""
        ...

    def kill(self, cell_id: str, *, as_crash: bool = False, why: str = "killed on request") -> None:
        """SIGKILL the running process (no-op when not running); ``stop``, or ``crash``
        whose detail is ``why``."""
        ...

    def process_id(self, cell_id: str) -> int | None:
        """The pid of the running process, or None."""
        ...


__all__ = ["CellBackend", "CellHandle", "SpawnedCell", "TeardownReport"]

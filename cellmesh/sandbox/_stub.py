"""The stub backend: the CellBackend contract in memory, for tests of callers.

No process is started. ``spawn`` resolves secrets (so brokers see the same
traffic as with a real backend) and records the call; ``wait`` returns the
status programmed with :meth:`StubBackend.program_exit` (default: exit 0);
``destroy`` revokes secrets and reports a clean teardown. Validation (empty
or duplicate id, unknown id, empty argv, spawn while running) is identical
to the real backends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from ..config import check_cell_name
from ._backend import CellHandle, SpawnedCell, TeardownReport
from ._events import EventSink, MemoryEventLog
from ._secrets import MemorySecretBroker, SecretBroker
from ._spec import CellSpec
from ._status import ExitReason, ExitStatus
from .errors import CellRunning, DuplicateCell, SandboxConfigError, SandboxError, UnknownCell


@attrs.define(eq=False)
class _StubCell:
    spec: CellSpec
    handle: CellHandle
    running: bool = False
    spawned: bool = False
    status: ExitStatus | None = None
    spawns: list[tuple[int, ...]] = attrs.Factory(list)


@attrs.define(eq=False)
class StubBackend:
    """In-memory backend (see module doc)."""

    events: EventSink = attrs.field(factory=MemoryEventLog)
    broker: SecretBroker = attrs.field(factory=MemorySecretBroker)
    _cells: dict[str, _StubCell] = attrs.field(factory=dict, init=False)
    _programmed: dict[str, ExitStatus] = attrs.field(factory=dict, init=False)
    _next_pid: int = attrs.field(default=100_000, init=False)

    @property
    def name(self) -> str:
        """``"stub"``."""
        return "stub"

    def program_exit(self, cell_id: str, status: ExitStatus) -> None:
        """The status the next ``wait`` of ``cell_id`` returns."""
        self._programmed[cell_id] = status

    def spawn_calls(self, cell_id: str) -> list[tuple[int, ...]]:
        """The ``pass_fds`` of every spawn of ``cell_id`` so far."""
        return list(self._get(cell_id).spawns)

    def create(self, spec: CellSpec) -> CellHandle:
        """Track ``spec`` (same validation as the real backends)."""
        if not spec.cell_id:
            raise SandboxConfigError("cell id", "is empty")
        check_cell_name(spec.cell_id, source="cell id")
        check_cell_name(spec.name, source="cell name")
        check_cell_name(spec.log_name, source="log name")
        if spec.cell_id in self._cells:
            raise DuplicateCell(spec.cell_id)
        if not spec.argv or not spec.argv[0]:
            raise SandboxConfigError("argv", "is empty: there is nothing to run")
        handle = CellHandle(cell_id=spec.cell_id, name=spec.name, backend="stub")
        self._cells[spec.cell_id] = _StubCell(spec, handle)
        return handle

    def tracked(self) -> Mapping[str, CellHandle]:
        """Live cells: id -> handle (a snapshot)."""
        return {cid: c.handle for cid, c in self._cells.items()}

    def sweep_stale(self) -> list[str]:
        """Nothing: the stub leaves no trace on the host."""
        return []

    def spawn(
        self,
        cell_id: str,
        *,
        pass_fds: Sequence[int] = (),
        stdout: int | None = None,
        stderr: int | None = None,
        keep_stdin: bool = False,
    ) -> SpawnedCell:
        """Record a spawn; the "process" exits at the next ``wait``."""
        cell = self._get(cell_id)
        if cell.running:
            raise CellRunning(cell_id, self._next_pid)
        self.broker.revoke_for_cell(cell_id)
        for ref in cell.spec.secrets:
            self.broker.resolve(cell_id, ref)
        cell.running = True
        cell.spawned = True
        cell.status = None
        cell.spawns.append(tuple(pass_fds))
        self._next_pid += 1
        self.events.emit(
            cell.spec.log_name,
            "started",
            {"cell_id": cell_id, "backend": "stub", "pid": self._next_pid},
        )
        return SpawnedCell(cell_id=cell_id, pid=self._next_pid, pidfd=None)

    def wait(self, cell_id: str, timeout: float | None = None) -> ExitStatus:
        """The programmed status (exit 0 by default)."""
        cell = self._get(cell_id)
        if not cell.spawned:
            raise SandboxError(f"cell {cell_id!r} has not been spawned")
        if cell.running:
            cell.running = False
            cell.status = self._programmed.pop(
                cell_id, ExitStatus(code=0, signal=None, reason="exit")
            )
            self.events.emit(
                cell.spec.log_name,
                "exited",
                {"cell_id": cell_id, "backend": "stub", **cell.status.to_json()},
            )
        assert cell.status is not None
        return cell.status

    async def wait_async(self, cell_id: str) -> ExitStatus:
        """Same as :meth:`wait` (nothing to wait for)."""
        return self.wait(cell_id)

    def destroy(self, cell_id: str, *, grace: float = 5.0) -> TeardownReport:
        """Forget ``cell_id`` and revoke its secrets."""
        cell = self._get(cell_id)
        if cell.running:
            cell.running = False
            cell.status = ExitStatus(code=None, signal=15, reason="stop")
        revoked = self.broker.revoke_for_cell(cell_id)
        del self._cells[cell_id]
        self.events.emit(
            cell.spec.log_name, "destroyed", {"cell_id": cell_id, "backend": "stub", "clean": True}
        )
        return TeardownReport(
            cell_id=cell_id,
            clean=True,
            exit=cell.status,
            removed=(),
            secrets_revoked=revoked,
            tracked_after=len(self._cells),
        )

    async def destroy_async(self, cell_id: str, *, grace: float = 5.0) -> TeardownReport:
        """Same as :meth:`destroy` (nothing to wait for)."""
        return self.destroy(cell_id, grace=grace)

    def terminate(self, cell_id: str) -> None:
        """The next ``wait`` reports a ``stop`` (when the cell runs)."""
        if self._get(cell_id).running:
            self._programmed[cell_id] = ExitStatus(code=None, signal=15, reason="stop")

    def kill(self, cell_id: str, *, as_crash: bool = False, why: str = "killed on request") -> None:
        """The next ``wait`` reports SIGKILL: ``crash`` (detail ``why``) with ``as_crash``,
        else ``stop``."""
        if self._get(cell_id).running:
            reason: ExitReason = "crash" if as_crash else "stop"
            self._programmed[cell_id] = ExitStatus(
                code=None, signal=9, reason=reason, detail=why if as_crash else ""
            )

    def process_id(self, cell_id: str) -> int | None:
        """The fake pid while the cell "runs", else None."""
        return self._next_pid if self._get(cell_id).running else None

    def _get(self, cell_id: str) -> _StubCell:
        cell = self._cells.get(cell_id)
        if cell is None:
            raise UnknownCell(cell_id)
        return cell


__all__ = ["StubBackend"]

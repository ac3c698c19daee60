"""Errors of the sandbox layer, split by who is to blame.

* :class:`SandboxConfigError` (a :class:`~cellmesh.errors.ConfigError`): the
  caller gave bad input -- an invalid environment entry, an empty argv, an
  unknown ``CELL_SANDBOX`` value, an empty or duplicate cell id.
* :class:`SandboxError` and its children: the host could not do what was asked
  (bwrap missing, a spawn failed in the kernel, a cgroup could not be made).
"""

from __future__ import annotations

from ..errors import CellmeshError, ConfigError


class SandboxConfigError(ConfigError):
    """Bad input to the sandbox layer (an argument, a spec field, an env var)."""


class DuplicateCell(SandboxConfigError):
    """``create()`` was given an id that is already live on this backend."""

    def __init__(self, cell_id: str) -> None:
        super().__init__("cell id", f"{cell_id!r} is already live; destroy it first")
        self.cell_id = cell_id


class UnknownCell(SandboxConfigError):
    """The id names no live cell on this backend (never created, or destroyed)."""

    def __init__(self, cell_id: str) -> None:
        super().__init__("cell id", f"{cell_id!r} is not a live cell on this backend")
        self.cell_id = cell_id


class SandboxError(CellmeshError):
    """The host failed to isolate, start, or tear down a cell."""


class BackendUnavailable(SandboxError):
    """The requested backend cannot run on this host (``reason`` says why)."""

    def __init__(self, backend: str, reason: str) -> None:
        super().__init__(f"sandbox backend {backend!r} is unavailable: {reason}")
        self.backend = backend
        self.reason = reason


class SpawnError(SandboxError):
    """The kernel refused to start the workload (``argv0`` is what we tried)."""

    def __init__(self, argv0: str, reason: str) -> None:
        super().__init__(f"could not start {argv0!r}: {reason}")
        self.argv0 = argv0
        self.reason = reason


class CellRunning(SandboxError):
    """``spawn()`` was called while the cell's previous process is still alive."""

    def __init__(self, cell_id: str, pid: int) -> None:
        super().__init__(f"cell {cell_id!r} is still running as pid {pid}")
        self.cell_id = cell_id
        self.pid = pid


class SecretUnavailable(SandboxError):
    """A broker could not resolve a secret reference (``key`` names it, never its value)."""

    def __init__(self, broker: str, key: str, reason: str) -> None:
        super().__init__(f"secret {key!r} from the {broker} broker: {reason}")
        self.broker = broker
        self.key = key
        self.reason = reason


__all__ = [
    "BackendUnavailable",
    "CellRunning",
    "DuplicateCell",
    "SandboxConfigError",
    "SandboxError",
    "SecretUnavailable",
    "SpawnError",
    "UnknownCell",
]

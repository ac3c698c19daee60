"""Capsid: the sandbox every cell process is started through.

Layer 3 (docs/architecture.md). It may import the leaves only
(:mod:`cellmesh.errors`, :mod:`cellmesh.config`): it starts processes, it
never speaks the wire.

One contract (:class:`CellBackend`), three backends (``bwrap``, ``host``,
``stub``) chosen by ``CELL_SANDBOX`` through :func:`select_backend`; the
hygienic spawn primitive :func:`spawn_isolated_workload`; per-cell limits
(cgroup v2 / v1 / rlimits, as detected); secret brokers; lifecycle events.
The public API is exactly what this module re-exports.
"""

from __future__ import annotations

from ._backend import CellBackend, CellHandle, SpawnedCell, TeardownReport
from ._bwrap import BwrapBackend
from ._check import HostReport, check_host
from ._events import EventSink, JsonlEventLog, MemoryEventLog, read_events
from ._host import HostBackend
from ._limits import CgroupHost, LimitPlan, plan_limits, sweep_stale_leaves
from ._open import open_cell
from ._process import sweep_leftovers
from ._secrets import (
    EnvSecretBroker,
    FileSecretBroker,
    MemorySecretBroker,
    Secret,
    SecretBroker,
    select_broker,
)
from ._select import BACKEND_NAMES, SandboxDowngradeWarning, select_backend
from ._spawn import FIRST_PASSED_FD, Workload, spawn_isolated_workload
from ._spec import CellSpec, Limits, NetGrant, SecretRef, WorkloadEnv, parse_size
from ._status import MEMORY_LIMIT_EXIT_CODE, ExitStatus
from ._stub import StubBackend
from .errors import (
    BackendUnavailable,
    CellRunning,
    DuplicateCell,
    SandboxConfigError,
    SandboxError,
    SecretUnavailable,
    SpawnError,
    UnknownCell,
)

__all__ = [
    "BACKEND_NAMES",
    "FIRST_PASSED_FD",
    "MEMORY_LIMIT_EXIT_CODE",
    "BackendUnavailable",
    "BwrapBackend",
    "CellBackend",
    "CellHandle",
    "CellRunning",
    "CellSpec",
    "CgroupHost",
    "DuplicateCell",
    "EnvSecretBroker",
    "EventSink",
    "ExitStatus",
    "FileSecretBroker",
    "HostBackend",
    "HostReport",
    "JsonlEventLog",
    "LimitPlan",
    "Limits",
    "MemoryEventLog",
    "MemorySecretBroker",
    "NetGrant",
    "SandboxConfigError",
    "SandboxDowngradeWarning",
    "SandboxError",
    "Secret",
    "SecretBroker",
    "SecretRef",
    "SecretUnavailable",
    "SpawnError",
    "SpawnedCell",
    "StubBackend",
    "TeardownReport",
    "UnknownCell",
    "Workload",
    "WorkloadEnv",
    "check_host",
    "parse_size",
    "open_cell",
    "plan_limits",
    "read_events",
    "select_backend",
    "select_broker",
    "spawn_isolated_workload",
    "sweep_leftovers",
    "sweep_stale_leaves",
]

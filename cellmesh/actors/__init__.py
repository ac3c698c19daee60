"""Actors: OTP-style supervision of cells and the DNA code cache.

:mod:`~cellmesh.actors.policy` decides (pure, synchronous);
:mod:`~cellmesh.actors.supervisor` acts on the decisions under Trio;
:mod:`~cellmesh.actors.dna` content-addresses and byte-compiles a cell's code.
The public API is exactly what this module re-exports.
"""

from __future__ import annotations

from .dna import DnaCache, DnaEntry, DnaSource, content_hash, hash_path, read_source, verify_entry
from .errors import (
    ChildAlreadyPresent,
    ChildRunning,
    ChildStartFailed,
    DnaCacheError,
    DnaError,
    DnaSourceError,
    InvalidSupervisorSpec,
    NotSupported,
    SupervisorEscalation,
    SupervisorRequestError,
    SupervisorStopped,
    UnknownChild,
)
from .policy import (
    AbnormalExit,
    Action,
    Backoff,
    ChildInfo,
    ChildKind,
    ChildSpec,
    ChildStatus,
    Escalate,
    ExitReason,
    NormalExit,
    RemoveChild,
    Restart,
    Shutdown,
    ShutdownExit,
    StartChild,
    StopChild,
    Strategy,
    SupervisorSpec,
    SupervisorState,
)
from .supervisor import (
    ChildFactory,
    ChildHandle,
    ProcessFactory,
    ProcessHandle,
    Supervisor,
    SupervisorChildHandle,
    SupervisorEvent,
)

__all__ = [
    "AbnormalExit",
    "Action",
    "Backoff",
    "ChildAlreadyPresent",
    "ChildFactory",
    "ChildHandle",
    "ChildInfo",
    "ChildKind",
    "ChildRunning",
    "ChildSpec",
    "ChildStartFailed",
    "ChildStatus",
    "DnaCache",
    "DnaCacheError",
    "DnaEntry",
    "DnaError",
    "DnaSource",
    "DnaSourceError",
    "Escalate",
    "ExitReason",
    "InvalidSupervisorSpec",
    "NormalExit",
    "NotSupported",
    "ProcessFactory",
    "ProcessHandle",
    "RemoveChild",
    "Restart",
    "Shutdown",
    "ShutdownExit",
    "StartChild",
    "StopChild",
    "Strategy",
    "Supervisor",
    "SupervisorChildHandle",
    "SupervisorEscalation",
    "SupervisorEvent",
    "SupervisorRequestError",
    "SupervisorSpec",
    "SupervisorState",
    "SupervisorStopped",
    "UnknownChild",
    "content_hash",
    "hash_path",
    "read_source",
    "verify_entry",
]

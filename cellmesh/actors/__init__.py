"""Actors: OTP-style supervision of cells and the DNA code cache.

Layer 5 (docs/architecture.md). It may import every layer below it: the
leaves, wire, transport, sandbox and consensus.

:mod:`~cellmesh.actors.policy` decides (pure, synchronous);
:mod:`~cellmesh.actors.supervisor` acts on the decisions under Trio;
:mod:`~cellmesh.actors.dna` content-addresses and byte-compiles a cell's code;
:mod:`~cellmesh.actors.root` is the daemon (import it explicitly: cells do
not pay for it). The public API is exactly what this module re-exports.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from .errors import (
    ChildAlreadyPresent,
    ChildRunning,
    ChildStartFailed,
    DnaCacheError,
    DnaError,
    DnaSourceError,
    InvalidSupervisorSpec,
    NotSupported,
    RootAlreadyRunning,
    RootError,
    RootNotRunning,
    RootRequestError,
    SupervisorEscalation,
    SupervisorRequestError,
    SupervisorStopped,
    UnknownChild,
)

if TYPE_CHECKING:
    from .dna import (
        DnaCache,
        DnaEntry,
        DnaHold,
        DnaSource,
        content_hash,
        hash_path,
        read_source,
        verify_entry,
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

#: Names loaded on first use, by module. A cell process imports this package
#: (for ``Cell``) but needs neither the restart policy, the supervisor nor
#: the DNA cache: importing them lazily keeps its start-up lean.
_LAZY: Final[Mapping[str, str]] = {
    "AbnormalExit": "policy",
    "Action": "policy",
    "Backoff": "policy",
    "ChildFactory": "supervisor",
    "ChildHandle": "supervisor",
    "ChildInfo": "policy",
    "ChildKind": "policy",
    "ChildSpec": "policy",
    "ChildStatus": "policy",
    "DnaCache": "dna",
    "DnaEntry": "dna",
    "DnaHold": "dna",
    "DnaSource": "dna",
    "Escalate": "policy",
    "ExitReason": "policy",
    "NormalExit": "policy",
    "ProcessFactory": "supervisor",
    "ProcessHandle": "supervisor",
    "RemoveChild": "policy",
    "Restart": "policy",
    "Shutdown": "policy",
    "ShutdownExit": "policy",
    "StartChild": "policy",
    "StopChild": "policy",
    "Strategy": "policy",
    "Supervisor": "supervisor",
    "SupervisorChildHandle": "supervisor",
    "SupervisorEvent": "supervisor",
    "SupervisorSpec": "policy",
    "SupervisorState": "policy",
    "content_hash": "dna",
    "hash_path": "dna",
    "read_source": "dna",
    "verify_entry": "dna",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
    "DnaHold",
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
    "RootAlreadyRunning",
    "RootError",
    "RootNotRunning",
    "RootRequestError",
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

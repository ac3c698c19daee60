"""cellmesh: a Trio structured-concurrency actor runtime.

The public API is exactly what this module re-exports. ``cellmesh.aio`` is the
asyncio client's module (:mod:`cellmesh.aio`, from :mod:`cellmesh.transport.aio`):
``import cellmesh.aio`` or ``from cellmesh import aio``, then ``aio.Synapse.connect(...)``.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

from .actors.cell import Cell, CellVersion, RawState, receptor
from .actors.control import CellDown
from .actors.replicated import CommandMeta, NondeterminismDetected, ReplicatedCell, query
from .errors import (
    CellmeshError,
    CellUnavailable,
    ConfigError,
    ConnectionClosed,
    FieldError,
    MembraneInUse,
    NoReceptor,
    OutcomeUnknown,
    ProteinError,
    ProtocolError,
    RemoteCellError,
    RemoteProteinError,
    ReplyRefused,
    SchemaMismatch,
    UnexpectedReply,
    UnknownProtein,
)
from .transport import (
    Membrane,
    MembraneOptions,
    MembraneStats,
    Receptors,
    Synapse,
    SynapseOptions,
    open_membrane,
)
from .wire.proteins import ProteinRegistry, fingerprint, protein, wire_name
from .wire.replies import Request
from .wire.vesicle import Vesicle

if _typing.TYPE_CHECKING:
    from . import aio
    from .transport.blocking import BlockingSynapse, connect

__version__ = "0.1.0"

#: Imported on first use: asyncio costs every cell process ~20 ms of start-up.
_LAZY: _typing.Final = {
    "aio": ("cellmesh.aio", None),
    "BlockingSynapse": ("cellmesh.transport.blocking", "BlockingSynapse"),
    "connect": ("cellmesh.transport.blocking", "connect"),
}


def __getattr__(name: str) -> _typing.Any:
    """The asyncio and blocking clients, imported when first asked for."""
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'cellmesh' has no attribute {name!r}") from None
    module = _importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value

__all__ = [
    "BlockingSynapse",
    "Cell",
    "CellDown",
    "CellUnavailable",
    "CellVersion",
    "CellmeshError",
    "CommandMeta",
    "ConfigError",
    "ConnectionClosed",
    "FieldError",
    "Membrane",
    "MembraneInUse",
    "MembraneOptions",
    "MembraneStats",
    "NoReceptor",
    "NondeterminismDetected",
    "OutcomeUnknown",
    "ProteinError",
    "ProteinRegistry",
    "ProtocolError",
    "RawState",
    "Receptors",
    "RemoteCellError",
    "RemoteProteinError",
    "ReplicatedCell",
    "ReplyRefused",
    "Request",
    "SchemaMismatch",
    "Synapse",
    "SynapseOptions",
    "UnexpectedReply",
    "UnknownProtein",
    "Vesicle",
    "__version__",
    "aio",
    "connect",
    "fingerprint",
    "open_membrane",
    "protein",
    "query",
    "receptor",
    "wire_name",
]

"""cellmesh: a Trio structured-concurrency actor runtime.

The public API is exactly what this module re-exports.
"""

from __future__ import annotations

from .actors.cell import Cell, CellVersion, RawState, receptor
from .actors.control import CellDown
from .errors import (
    CellmeshError,
    CellUnavailable,
    ConfigError,
    ConnectionClosed,
    FieldError,
    MembraneInUse,
    ProteinError,
    ProtocolError,
    RemoteCellError,
    SchemaMismatch,
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
from .wire.vesicle import Vesicle

__version__ = "0.1.0"

__all__ = [
    "Cell",
    "CellDown",
    "CellUnavailable",
    "CellVersion",
    "CellmeshError",
    "ConfigError",
    "ConnectionClosed",
    "FieldError",
    "Membrane",
    "MembraneInUse",
    "MembraneOptions",
    "MembraneStats",
    "ProteinError",
    "ProteinRegistry",
    "ProtocolError",
    "RawState",
    "Receptors",
    "RemoteCellError",
    "SchemaMismatch",
    "Synapse",
    "SynapseOptions",
    "UnknownProtein",
    "Vesicle",
    "__version__",
    "fingerprint",
    "open_membrane",
    "protein",
    "receptor",
    "wire_name",
]

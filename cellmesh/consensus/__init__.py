"""Raft consensus: the pure core, its value types and errors.

The public API is what this module re-exports. :class:`RaftCore` is the
sans-I/O state machine (see :mod:`cellmesh.consensus.core` for the driver
loop and the persist-before-send contract on :class:`Ready`).
"""

from cellmesh.consensus.config import RaftConfig, RandomSource
from cellmesh.consensus.core import RaftCore
from cellmesh.consensus.errors import (
    ConfigChangeInProgress,
    ConsensusError,
    ConsensusUsageError,
    InvalidConfigChange,
    NotLeader,
    ProposalDropped,
)
from cellmesh.consensus.messages import Message, MessageType, well_formed
from cellmesh.consensus.ready import Ready
from cellmesh.consensus.types import (
    Entry,
    EntryKind,
    HardState,
    Membership,
    ReadState,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
)

__all__ = [
    "ConfigChangeInProgress",
    "ConsensusError",
    "ConsensusUsageError",
    "Entry",
    "EntryKind",
    "HardState",
    "InvalidConfigChange",
    "Membership",
    "Message",
    "MessageType",
    "NotLeader",
    "ProposalDropped",
    "RaftConfig",
    "RaftCore",
    "RandomSource",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "SoftState",
    "well_formed",
]

"""Raft consensus: the pure core, the write-ahead log and the Trio driver.

Layer 4 (docs/architecture.md). It may import the leaves, :mod:`cellmesh.wire`
and :mod:`cellmesh.transport` (the membrane transport), never the actors.

The public API is what this module re-exports. :class:`RaftCore` is the
sans-I/O state machine (see :mod:`cellmesh.consensus.core` for the driver
loop and the persist-before-send contract on :class:`Ready`);
:class:`WriteAheadLog` is its durable log; :func:`open_raft_node` runs a
:class:`RaftNode` over a :class:`Transport`. The core modules import no I/O
(``tests/consensus/test_core_purity.py``); this package namespace does.
"""

from cellmesh.consensus.config import RaftConfig, RandomSource
from cellmesh.consensus.core import RaftCore
from cellmesh.consensus.errors import (
    CatchUpFailed,
    ConfigChangeInProgress,
    ConsensusError,
    ConsensusUsageError,
    InvalidConfigChange,
    NodeRemoved,
    NotLeader,
    ProposalDropped,
    ProposalOutcomeUnknown,
    RestoredLogInvalid,
)
from cellmesh.consensus.membrane_transport import MembraneTransport, Packet, open_membrane_transport
from cellmesh.consensus.message_codec import decode_message, encode_message
from cellmesh.consensus.messages import Message, MessageType, well_formed
from cellmesh.consensus.node import (
    IndexedStateMachine,
    LogStorage,
    NodeOptions,
    NodeStatus,
    NodeStopped,
    ProposalCallback,
    RaftNode,
    StateMachine,
    SyncRunner,
    open_raft_node,
    run_in_thread,
    run_inline,
)
from cellmesh.consensus.ready import Ready
from cellmesh.consensus.transport import MemoryNetwork, MemoryTransport, Transport
from cellmesh.consensus.types import (
    Entry,
    EntryKind,
    HardState,
    JoinState,
    Membership,
    PendingChange,
    ReadState,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
)
from cellmesh.consensus.wal import (
    OsSyncer,
    Recovered,
    Syncer,
    TornTail,
    WalBatch,
    WalCorrupted,
    WalError,
    WalFailed,
    WalLocked,
    WalMisuse,
    WalStateLost,
    WalStats,
    WalWrongNode,
    WipeReport,
    WriteAheadLog,
    prepare_directory,
    wipe_replica,
)

__all__ = [
    "CatchUpFailed",
    "ConfigChangeInProgress",
    "ConsensusError",
    "ConsensusUsageError",
    "RestoredLogInvalid",
    "Entry",
    "EntryKind",
    "HardState",
    "IndexedStateMachine",
    "InvalidConfigChange",
    "JoinState",
    "LogStorage",
    "Membership",
    "MembraneTransport",
    "MemoryNetwork",
    "MemoryTransport",
    "Message",
    "MessageType",
    "NodeOptions",
    "NodeRemoved",
    "NodeStatus",
    "NodeStopped",
    "NotLeader",
    "OsSyncer",
    "Packet",
    "PendingChange",
    "ProposalCallback",
    "ProposalDropped",
    "ProposalOutcomeUnknown",
    "RaftConfig",
    "RaftCore",
    "RaftNode",
    "RandomSource",
    "ReadState",
    "Ready",
    "Recovered",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "SoftState",
    "StateMachine",
    "SyncRunner",
    "Syncer",
    "TornTail",
    "Transport",
    "WalBatch",
    "WalCorrupted",
    "WalError",
    "WalFailed",
    "WalLocked",
    "WalMisuse",
    "WalStateLost",
    "WalStats",
    "WalWrongNode",
    "WipeReport",
    "WriteAheadLog",
    "decode_message",
    "encode_message",
    "open_membrane_transport",
    "open_raft_node",
    "prepare_directory",
    "run_in_thread",
    "run_inline",
    "well_formed",
    "wipe_replica",
]

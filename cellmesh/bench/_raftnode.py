"""Raw Raft for the benchmarks: a node process over the membrane transport, no cell around it.

Theory of operation
-------------------
``python -m cellmesh.bench._raftnode --id N --voters 1,2,3 --data-dir D
--socket-dir S`` runs one :class:`~cellmesh.consensus.RaftNode` with a
:class:`~cellmesh.testing.kvsm.KeyValueMachine`, its peers reached over the
membrane transport at ``S/raft-<id>.sock``. The same membrane serves the
benchmark's client: :class:`RawPropose` (answered with :class:`RawResult`,
or :class:`RawRedirect` when the node does not lead) and :class:`RawStatus`
(answered with :class:`RawInfo`). No root, no sandbox, no sessions, no
batching beyond the node's own (one entry per proposal): the floor a
replicated cell is compared to (``cellmesh bench raft --raw``,
``cellmesh bench replicated``).
"""

from __future__ import annotations

import argparse
import functools
import os
from pathlib import Path
from typing import Final

import trio

from ..consensus import (
    NodeOptions,
    NotLeader,
    RaftConfig,
    RaftNode,
    WriteAheadLog,
    open_raft_node,
    run_in_thread,
)
from ..consensus.membrane_transport import Packet, open_membrane_transport
from ..consensus.node import LogStorage
from ..consensus.wal import Recovered
from ..transport import Receptors, open_membrane
from ..transport._dispatch import Handler
from ..wire.proteins import protein

_NAME: Final = "raft"


@protein("cellmesh.bench.raft.Propose")
class RawPropose:
    """Propose ``command`` (``key=value``)."""

    command: bytes


@protein("cellmesh.bench.raft.Result")
class RawResult:
    """The state machine's result (the key's previous value)."""

    value: bytes


@protein("cellmesh.bench.raft.Redirect")
class RawRedirect:
    """This node does not lead; ``leader`` is its hint."""

    leader: int | None


@protein("cellmesh.bench.raft.Status")
class RawStatus:
    """Ask for the node's status."""


@protein("cellmesh.bench.raft.Info")
class RawInfo:
    """A node's role name, leader, term, commit and applied indexes, and WAL saves."""

    role: str
    leader: int | None
    term: int
    commit: int
    applied: int
    saves: int


def socket_path(socket_dir: Path, node: int) -> Path:
    """Where node ``node`` serves peers and clients."""
    return socket_dir / f"raft-{node}.sock"


class NoSync:
    """Benchmark-only: skip every fsync (the data is NOT durable)."""

    def sync_data(self, fd: int) -> None:
        """Do nothing."""

    def sync_file(self, fd: int) -> None:
        """Do nothing."""

    def sync_dir(self, fd: int) -> None:
        """Do nothing."""


def open_unsynced_storage(directory: Path) -> tuple[LogStorage, Recovered]:
    """A write-ahead log that never fsyncs: for benchmarks against non-durable baselines."""
    return WriteAheadLog.open(directory, syncer=NoSync())


def _handlers(node: RaftNode) -> dict[type, Handler]:
    async def propose(msg: RawPropose) -> RawResult | RawRedirect:
        try:
            return RawResult(value=await node.propose(bytes(msg.command)))
        except NotLeader as exc:
            return RawRedirect(leader=exc.leader_hint)

    async def status(msg: RawStatus) -> RawInfo:
        del msg
        s = node.status()
        return RawInfo(role=s.role.name, leader=s.leader, term=s.term, commit=s.commit,
                       applied=s.applied, saves=s.saves)

    return {RawPropose: propose, RawStatus: status}


async def serve(
    node_id: int,
    voters: list[int],
    *,
    data_dir: Path,
    socket_dir: Path,
    tick: float,
    no_fsync: bool = False,
    task_status: trio.TaskStatus[RaftNode] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one raw node and its membrane until cancelled."""
    from ..testing.kvsm import KeyValueMachine

    peers = {n: socket_path(socket_dir, n) for n in voters}
    async with (
        open_membrane_transport(node_id, peers) as transport,
        open_raft_node(
            RaftConfig(id=node_id),
            voters=voters,
            directory=data_dir,
            transport=transport,
            state_machine=KeyValueMachine(),
            options=NodeOptions(tick_interval=tick, max_pending_proposals=4096),
            open_storage=open_unsynced_storage if no_fsync else WriteAheadLog.open,
            run_sync=run_in_thread,
        ) as node,
    ):
        receptors = Receptors({Packet: transport.on_packet, **_handlers(node)})
        async with open_membrane(
            _NAME, receptors, socket_path=socket_path(socket_dir, node_id), drain_grace=0
        ):
            task_status.started(node)
            await trio.sleep_forever()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description="One raw cellmesh Raft node (benchmarks).")
    parser.add_argument("--id", type=int, required=True)
    parser.add_argument("--voters", required=True, help="comma-separated node ids")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--socket-dir", type=Path, required=True)
    parser.add_argument("--tick", type=float, default=0.05, help="seconds per Raft tick")
    parser.add_argument(
        "--unsafe-no-fsync", action="store_true", help="benchmarks only: never fsync the WAL"
    )
    args = parser.parse_args(argv)
    os.makedirs(args.socket_dir, mode=0o700, exist_ok=True)
    try:
        trio.run(functools.partial(
            serve, args.id, [int(v) for v in args.voters.split(",")],
            data_dir=args.data_dir, socket_dir=args.socket_dir, tick=args.tick,
            no_fsync=args.unsafe_no_fsync,
        ))
    except* KeyboardInterrupt:
        pass  # Ctrl-C is the normal way to stop a foreground node


if __name__ == "__main__":
    main()


__all__ = [
    "NoSync",
    "RawInfo",
    "RawPropose",
    "RawRedirect",
    "RawResult",
    "RawStatus",
    "main",
    "open_unsynced_storage",
    "serve",
    "socket_path",
]

"""Shared helpers of the consensus driver tests: a KV state machine, an in-memory
cluster of real nodes (real WAL, MemoryNetwork, MockClock), a recorder of saves and
sends."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import cbor2
import pytest
import trio
import trio.testing

from cellmesh.consensus.core import RaftConfig
from cellmesh.consensus.messages import Message
from cellmesh.consensus.node import (
    LogStorage,
    NodeOptions,
    OpenStorage,
    RaftNode,
    open_raft_node,
    open_wal_storage,
    run_inline,
)
from cellmesh.consensus.transport import MemoryNetwork, Transport
from cellmesh.consensus.types import Role
from cellmesh.consensus.wal import Recovered, WalBatch

IDS = (1, 2, 3)
TICK = 0.05


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@attrs.define
class KV:
    """A tiny deterministic state machine: ``key=value`` sets, queries get."""

    data: dict[bytes, bytes] = attrs.Factory(dict)
    applied: int = 0

    def apply(self, command: bytes) -> bytes:
        key, _, value = command.partition(b"=")
        old = self.data.get(key, b"")
        self.data[key] = value
        self.applied += 1
        return old

    def query(self, query: bytes) -> bytes:
        return self.data.get(query, b"")

    def snapshot(self) -> bytes:
        return cbor2.dumps([self.data, self.applied])

    def restore(self, data: bytes) -> None:
        self.data, self.applied = cbor2.loads(data)


@attrs.define(eq=False)
class Cluster:
    """Runs nodes in one nursery; a node can be crashed (cancelled) and restarted."""

    nursery: trio.Nursery
    root: Path
    network: MemoryNetwork
    options: NodeOptions
    open_storage: OpenStorage = open_wal_storage
    wrap_transport: Callable[[int, Transport], Transport] | None = None
    nodes: dict[int, RaftNode] = attrs.Factory(dict)
    machines: dict[int, KV] = attrs.Factory(dict)
    scopes: dict[int, trio.CancelScope] = attrs.Factory(dict)
    finished: dict[int, trio.Event] = attrs.Factory(dict)
    restarts: int = 0

    def directory(self, node_id: int) -> Path:
        """Where node ``node_id`` keeps its log."""
        return self.root / str(node_id)

    async def start(self, node_id: int, *, join: bool = False) -> RaftNode:
        machine = KV()
        transport: Transport = self.network.transport(node_id)
        if self.wrap_transport is not None:
            transport = self.wrap_transport(node_id, transport)
        self.restarts += 1
        seed = node_id * 1000 + self.restarts

        finished = self.finished[node_id] = trio.Event()

        async def run(task_status: trio.TaskStatus[RaftNode]) -> None:
            try:
                with trio.CancelScope() as scope:
                    async with open_raft_node(
                        RaftConfig(id=node_id),
                        voters=IDS,
                        directory=self.directory(node_id),
                        transport=transport,
                        state_machine=machine,
                        options=self.options,
                        rng=random.Random(seed),
                        open_storage=self.open_storage,
                        run_sync=run_inline,
                        join=join,
                    ) as node:
                        self.scopes[node_id] = scope
                        task_status.started(node)
                        await trio.sleep_forever()
            finally:
                finished.set()

        node: RaftNode = await self.nursery.start(run)
        self.nodes[node_id] = node
        self.machines[node_id] = machine
        return node

    async def crash(self, node_id: int) -> None:
        """Kill the node (its messages vanish at once) and wait until its files are closed."""
        self.network.crash(node_id)
        self.scopes.pop(node_id).cancel()
        del self.nodes[node_id]
        await self.finished[node_id].wait()

    async def leader(self) -> RaftNode:
        """The node that currently leads (waiting for an election if needed)."""
        while True:
            for node in self.nodes.values():
                if node.status().role is Role.LEADER:
                    return node
            await trio.sleep(TICK)

    async def converge(self, index: int) -> None:
        for node in self.nodes.values():
            await node.wait_applied(index)


@asynccontextmanager
async def cluster(tmp_path: Path, **kwargs: object) -> AsyncIterator[Cluster]:
    options = kwargs.pop("options", NodeOptions(tick_interval=TICK))
    assert isinstance(options, NodeOptions)
    # Virtual seconds: a stuck test fails fast instead of hanging.
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            c = Cluster(nursery, tmp_path, MemoryNetwork(), options, **kwargs)  # type: ignore[arg-type]
            for node_id in IDS:
                await c.start(node_id)
            yield c
            nursery.cancel_scope.cancel()


@attrs.define
class Recorder:
    """A shared, ordered log of saves and sends across all nodes."""

    events: list[tuple[int, str, object]] = attrs.Factory(list)

    def storage(self, inner: OpenStorage) -> OpenStorage:
        def open_(directory: Path) -> tuple[LogStorage, Recovered]:
            storage, recovered = inner(directory)
            return RecordingStorage(self, int(directory.name), storage), recovered

        return open_

    def transport(self, node_id: int, inner: Transport) -> Transport:
        return RecordingTransport(self, node_id, inner)


@attrs.define
class RecordingStorage:
    recorder: Recorder
    node: int
    inner: LogStorage

    def save(self, batch: WalBatch) -> None:
        self.inner.save(batch)
        # Appended only after the save is durable (list.append is atomic).
        self.recorder.events.append((self.node, "saved", batch))

    def close(self) -> None:
        self.inner.close()


@attrs.define
class RecordingTransport:
    recorder: Recorder
    node: int
    inner: Transport

    def send(self, message: Message) -> None:
        self.recorder.events.append((self.node, "send", message))
        self.inner.send(message)

    async def receive(self) -> Message:
        return await self.inner.receive()



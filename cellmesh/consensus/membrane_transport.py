"""Raft messages over membranes: the transport replicated cells use.

Theory of operation
-------------------
Each node serves a :class:`~cellmesh.Membrane` under its own cell name and
reaches every peer through a :class:`~cellmesh.Synapse`. A Raft message
travels as one ``cellmesh.raft.Packet`` protein whose ``frame`` field holds
the message in the Raft message codec (:mod:`cellmesh.consensus.unix_transport`,
whose decoder raises only ``MalformedFrame`` on hostile bytes); a snapshot
large enough travels as a vesicle like any big ``bytes`` field. Packets are
*signals*: Raft never waits for a transport acknowledgement.

The transport is best-effort, as :class:`~cellmesh.consensus.transport.Transport`
requires. :meth:`MembraneTransport.send` never blocks: it puts the message
in the peer's bounded queue and drops it (counted) when the queue is full.
One sender task per peer drains its queue in batches (``signal_many``);
while the peer is unreachable, queued messages are dropped and the sender
reconnects after ``retry_delay`` seconds. Raft's heartbeats and retries
recover what was dropped. Received packets go to a bounded inbox; a packet
that does not decode, or is addressed to another node, is counted and
dropped; the connection that carried it is unaffected.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Final

import attrs
import trio

from cellmesh.consensus.messages import Message
from cellmesh.consensus.unix_transport import decode_message, encode_message
from cellmesh.errors import CellmeshError, MalformedFrame
from cellmesh.transport.membrane import open_membrane
from cellmesh.transport.synapse import Synapse
from cellmesh.wire.proteins import protein

#: Messages a peer's send queue holds before new ones are dropped.
QUEUE_SIZE: Final = 1024
#: Packets sent in one ``signal_many`` at most.
BATCH: Final = 256
#: ``encode_message`` frames start with a 4-byte length the packet does not need.
_LENGTH_PREFIX: Final = 4


@protein("cellmesh.raft.Packet")
class Packet:
    """One Raft message in the Raft message codec (without its length prefix)."""

    frame: bytes


@attrs.define(kw_only=True)
class TransportStats:
    """What the transport dropped or refused (it never blocks the node)."""

    sent: int = 0
    received: int = 0
    dropped_full: int = 0
    dropped_unreachable: int = 0
    malformed: int = 0
    misaddressed: int = 0


class MembraneTransport:
    """One node's endpoint: a membrane for incoming packets, synapses to peers."""

    def __init__(self, node_id: int, inbox_size: int = QUEUE_SIZE) -> None:
        self.node_id = node_id
        self.stats = TransportStats()
        self._inbox_send, self._inbox = trio.open_memory_channel[Message](inbox_size)
        self._queues: dict[int, trio.MemorySendChannel[Message]] = {}

    def send(self, message: Message) -> None:
        """Queue ``message`` for its destination; drop it if that queue is full."""
        queue = self._queues.get(message.dst)
        if queue is None:
            self.stats.dropped_unreachable += 1
            return
        try:
            queue.send_nowait(message)
        except trio.WouldBlock:
            self.stats.dropped_full += 1

    async def receive(self) -> Message:
        """The next message addressed to this node."""
        return await self._inbox.receive()

    async def _on_packet(self, packet: Packet) -> None:
        try:
            message = decode_message(bytes(packet.frame))
        except MalformedFrame:
            self.stats.malformed += 1
            return
        if message.dst != self.node_id:
            self.stats.misaddressed += 1
            return
        try:
            self._inbox_send.send_nowait(message)
            self.stats.received += 1
        except trio.WouldBlock:
            self.stats.dropped_full += 1

    async def _sender(
        self,
        cell: str,
        queue: trio.MemoryReceiveChannel[Message],
        socket_dir: str | os.PathLike[str] | None,
        retry_delay: float,
    ) -> None:
        while True:
            try:
                async with Synapse.grow(cell, socket_dir=socket_dir) as syn:
                    while True:
                        batch = [await queue.receive()]
                        while len(batch) < BATCH:
                            try:
                                batch.append(queue.receive_nowait())
                            except trio.WouldBlock:
                                break
                        await syn.signal_many(
                            [Packet(encode_message(m)[_LENGTH_PREFIX:]) for m in batch]
                        )
                        self.stats.sent += len(batch)
            except CellmeshError:
                pass  # the peer is down or went away: drop what waits, retry later
            while True:
                try:
                    queue.receive_nowait()
                    self.stats.dropped_unreachable += 1
                except trio.WouldBlock:
                    break
            await trio.sleep(retry_delay)


@asynccontextmanager
async def open_membrane_transport(
    node_id: int,
    cell: str,
    peers: Mapping[int, str],
    *,
    socket_dir: str | os.PathLike[str] | None = None,
    retry_delay: float = 0.05,
    queue_size: int = QUEUE_SIZE,
) -> AsyncIterator[MembraneTransport]:
    """Serve Raft packets as cell ``cell`` and reach ``peers`` (node id -> cell name).

    ``socket_dir`` defaults to ``$CELL_SOCKET_DIR``. The block owns the
    membrane and one sender task per peer.
    """
    transport = MembraneTransport(node_id, queue_size)
    async with open_membrane(cell, transport._on_packet, socket_dir=socket_dir, drain_grace=0):
        async with trio.open_nursery() as nursery:
            for peer, peer_cell in peers.items():
                if peer == node_id:
                    continue
                send, receive = trio.open_memory_channel[Message](queue_size)
                transport._queues[peer] = send
                nursery.start_soon(transport._sender, peer_cell, receive, socket_dir, retry_delay)
            yield transport
            nursery.cancel_scope.cancel()

"""Raft messages over membranes: the one transport Raft runs on in cellmesh.

Theory of operation
-------------------
A Raft message travels as one ``cellmesh.raft.Packet`` protein whose
``frame`` field holds the message in the Raft message codec
(:mod:`cellmesh.consensus.message_codec`, whose decoder raises only
``MalformedFrame`` on hostile bytes); a snapshot large enough travels as a
vesicle like any big ``bytes`` field. Packets are *signals*: Raft never
waits for a transport acknowledgement.

Each node serves :meth:`MembraneTransport.on_packet` as the receptor of
``Packet`` on its own membrane (its peer socket; the owner of the membrane
may serve other proteins beside it) and reaches every peer through a
:class:`~cellmesh.Synapse` to that peer's socket path. Peers can be added
and removed while the node runs (membership changes).

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

from cellmesh.consensus.message_codec import decode_message, encode_message
from cellmesh.consensus.messages import Message
from cellmesh.errors import CellmeshError, MalformedFrame
from cellmesh.transport.synapse import Synapse
from cellmesh.wire.proteins import protein

#: Messages a peer's send queue (and the inbox) holds before new ones are dropped.
QUEUE_SIZE: Final = 1024
#: Packets sent in one ``signal_many`` at most.
BATCH: Final = 256
#: Seconds between reconnection attempts to an unreachable peer.
RETRY_DELAY: Final = 0.05


@protein("cellmesh.raft.Packet")
class Packet:
    """One Raft message in the Raft message codec."""

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


@attrs.define(eq=False)
class _Peer:
    path: str
    queue: trio.MemorySendChannel[Message]
    scope: trio.CancelScope


class MembraneTransport:
    """One node's endpoint: ``on_packet`` for incoming packets, a sender per peer.

    Create it with :func:`open_membrane_transport`, which owns the sender tasks.
    """

    def __init__(
        self,
        node_id: int,
        nursery: trio.Nursery,
        *,
        inbox_size: int = QUEUE_SIZE,
        queue_size: int = QUEUE_SIZE,
        retry_delay: float = RETRY_DELAY,
        client_name: str | None = None,
    ) -> None:
        self.node_id = node_id
        self.stats = TransportStats()
        self._nursery = nursery
        self._queue_size = queue_size
        self._retry_delay = retry_delay
        self._client_name = client_name or f"raft-{node_id}"
        self._inbox_send, self._inbox = trio.open_memory_channel[Message](inbox_size)
        self._peers: dict[int, _Peer] = {}

    @property
    def peers(self) -> dict[int, str]:
        """Peer node id -> socket path, for every peer currently known."""
        return {node: peer.path for node, peer in self._peers.items()}

    def add_peer(self, node_id: int, socket_path: str | os.PathLike[str]) -> None:
        """Reach node ``node_id`` at ``socket_path`` (replacing a previous path)."""
        if node_id == self.node_id:
            return
        path = os.fspath(socket_path)
        old = self._peers.get(node_id)
        if old is not None:
            if old.path == path:
                return
            self.remove_peer(node_id)
        send, receive = trio.open_memory_channel[Message](self._queue_size)
        scope = trio.CancelScope()
        self._peers[node_id] = _Peer(path=path, queue=send, scope=scope)
        self._nursery.start_soon(self._sender, node_id, path, receive, scope)

    def remove_peer(self, node_id: int) -> None:
        """Stop sending to ``node_id``; its queued messages are dropped."""
        peer = self._peers.pop(node_id, None)
        if peer is not None:
            peer.scope.cancel()
            peer.queue.close()

    def send(self, message: Message) -> None:
        """Queue ``message`` for its destination; drop it if that queue is full."""
        peer = self._peers.get(message.dst)
        if peer is None:
            self.stats.dropped_unreachable += 1
            return
        try:
            peer.queue.send_nowait(message)
        except trio.WouldBlock:
            self.stats.dropped_full += 1

    async def receive(self) -> Message:
        """The next message addressed to this node."""
        return await self._inbox.receive()

    async def on_packet(self, packet: Packet) -> None:
        """The receptor of ``Packet``: decode, check the address, queue for the node."""
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
        node_id: int,
        path: str,
        queue: trio.MemoryReceiveChannel[Message],
        scope: trio.CancelScope,
    ) -> None:
        with scope:
            while True:
                try:
                    async with Synapse.grow(
                        f"raft-{node_id}", socket_path=path, client_name=self._client_name
                    ) as syn:
                        while True:
                            batch = [await queue.receive()]
                            while len(batch) < BATCH:
                                try:
                                    batch.append(queue.receive_nowait())
                                except trio.WouldBlock:
                                    break
                            await syn.signal_many([Packet(encode_message(m)) for m in batch])
                            self.stats.sent += len(batch)
                except CellmeshError:
                    pass  # the peer is down or went away: drop what waits, retry later
                while True:
                    try:
                        queue.receive_nowait()
                        self.stats.dropped_unreachable += 1
                    except trio.WouldBlock:
                        break
                await trio.sleep(self._retry_delay)


@asynccontextmanager
async def open_membrane_transport(
    node_id: int,
    peers: Mapping[int, str | os.PathLike[str]] | None = None,
    *,
    retry_delay: float = RETRY_DELAY,
    queue_size: int = QUEUE_SIZE,
    client_name: str | None = None,
) -> AsyncIterator[MembraneTransport]:
    """A transport for node ``node_id`` reaching ``peers`` (node id -> socket path).

    The caller serves :meth:`MembraneTransport.on_packet` for
    :class:`Packet` on the node's own membrane. The block owns one sender
    task per peer (``peers`` may include ``node_id`` itself: it is skipped).
    """
    async with trio.open_nursery() as nursery:
        transport = MembraneTransport(
            node_id, nursery, inbox_size=queue_size, queue_size=queue_size,
            retry_delay=retry_delay, client_name=client_name,
        )
        for peer, path in (peers or {}).items():
            transport.add_peer(peer, path)
        yield transport
        nursery.cancel_scope.cancel()


__all__ = [
    "BATCH",
    "QUEUE_SIZE",
    "RETRY_DELAY",
    "MembraneTransport",
    "Packet",
    "TransportStats",
    "open_membrane_transport",
]

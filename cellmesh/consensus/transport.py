"""How a Raft node reaches its peers: the ``Transport`` seam and an in-memory network.

Theory of operation
-------------------
Raft tolerates lost, duplicated and reordered messages, so the driver treats
the network as best-effort: :meth:`Transport.send` never blocks the node's
loop (a transport with a full queue drops the message; the core retries on
its next heartbeat), and :meth:`Transport.receive` hands over the next
message addressed to this node.

:class:`MemoryNetwork` is a deterministic in-process network for tests and
simulations: every node gets a bounded FIFO inbox; a node can be marked down
(its traffic vanishes, as if the process were dead), links can be cut, and
the whole network can be paused (messages are held, in order, until
:meth:`MemoryNetwork.resume`). It uses no clock, so Trio's ``MockClock``
drives everything.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import attrs
import trio

from cellmesh.consensus.messages import Message

MessageFilter = Callable[[Message], bool]


class Transport(Protocol):
    """One node's view of the network. Implementations are per node."""

    def send(self, message: Message) -> None:
        """Queue ``message`` for ``message.dst``. Must not block; may drop it."""

    async def receive(self) -> Message:
        """Wait for the next message addressed to this node."""
        ...


@attrs.define(eq=False)
class MemoryNetwork:
    """An in-memory network of :class:`MemoryTransport` endpoints.

    ``inbox_size`` bounds each node's inbox; messages beyond it are dropped
    (and counted in :attr:`dropped`), which models a slow peer without ever
    blocking a sender.
    """

    inbox_size: int = 1024
    _inboxes: dict[int, trio.MemorySendChannel[Message]] = attrs.Factory(dict)
    _down: set[int] = attrs.Factory(set)
    _cut: set[frozenset[int]] = attrs.Factory(set)
    _drop: MessageFilter | None = None
    _paused: list[Message] | None = None
    dropped: int = 0
    delivered: int = 0

    def transport(self, node: int) -> MemoryTransport:
        """A fresh endpoint for ``node`` (replacing any previous one) and mark it up."""
        send, receive = trio.open_memory_channel[Message](self.inbox_size)
        old = self._inboxes.get(node)
        if old is not None:
            old.close()
        self._inboxes[node] = send
        self._down.discard(node)
        return MemoryTransport(network=self, node=node, inbox=receive)

    def crash(self, node: int) -> None:
        """Mark ``node`` down: messages from or to it are lost until a new endpoint is made."""
        self._down.add(node)

    def cut(self, a: int, b: int) -> None:
        """Lose every message between ``a`` and ``b`` (both ways)."""
        self._cut.add(frozenset((a, b)))

    def isolate(self, node: int) -> None:
        """Cut ``node`` from every other node currently known."""
        for other in self._inboxes:
            if other != node:
                self.cut(node, other)

    def heal(self) -> None:
        """Restore every cut link and clear the drop filter."""
        self._cut.clear()
        self._drop = None

    def drop_when(self, predicate: MessageFilter | None) -> None:
        """Lose every message for which ``predicate`` returns True (``None``: none)."""
        self._drop = predicate

    def pause(self) -> None:
        """Hold every message sent from now on, in order, until :meth:`resume`."""
        if self._paused is None:
            self._paused = []

    def resume(self) -> None:
        """Deliver the held messages (subject to the rules in force now) and stop holding."""
        held, self._paused = self._paused or [], None
        for message in held:
            self._route(message)

    def _route(self, message: Message) -> None:
        if self._paused is not None:
            self._paused.append(message)
            return
        inbox = self._inboxes.get(message.dst)
        if (
            inbox is None
            or message.src in self._down
            or message.dst in self._down
            or frozenset((message.src, message.dst)) in self._cut
            or (self._drop is not None and self._drop(message))
        ):
            self.dropped += 1
            return
        try:
            inbox.send_nowait(message)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self.dropped += 1
            return
        self.delivered += 1


@attrs.define(eq=False)
class MemoryTransport:
    """One node's endpoint on a :class:`MemoryNetwork`."""

    network: MemoryNetwork
    node: int
    inbox: trio.MemoryReceiveChannel[Message]

    def send(self, message: Message) -> None:
        """Route ``message`` through the network; never blocks."""
        self.network._route(message)

    async def receive(self) -> Message:
        """The next message for this node; waits forever if none ever comes."""
        try:
            return await self.inbox.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            await trio.sleep(math.inf)
            raise AssertionError("unreachable") from None


__all__ = ["MemoryNetwork", "MemoryTransport", "MessageFilter", "Transport"]

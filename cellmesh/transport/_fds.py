"""Descriptors received on a connection that no frame has claimed yet (docs/protocol.md 13).

Theory of operation
-------------------
A sender attaches a frame's descriptors (SCM_RIGHTS) to the frame's first
byte, and the kernel returns them with the read that includes that byte. So
a receiver needs to hold descriptors only while a frame may still claim
them: once it has consumed every complete frame, the descriptors it holds
must all have come with the read that began the one incomplete frame -- at
most one frame's worth. :class:`HeldFds` enforces exactly that, for every
driver (the Trio channel of membranes and synapses, the asyncio client):

* :meth:`HeldFds.received` queues what one read brought, remembering where in
  the stream that read began, and refuses more than :data:`MAX_HELD_FDS`
  (one frame's worth from the incomplete frame, one from the read that
  completes it) and, through a shared :class:`FdBudget`, more than a
  membrane's connections may hold together;
* :meth:`HeldFds.take` hands a complete frame its descriptors;
* :meth:`HeldFds.check`, called once every complete frame is consumed,
  refuses descriptors no frame can claim any more.

Every refusal is a :class:`~cellmesh.errors.VesicleError` (the connection is
closed, code ``BAD_VESICLE``); :meth:`HeldFds.close` closes what is held.
"""

from __future__ import annotations

import array
import collections
import os
import socket
from typing import Final

from ..errors import VesicleError
from ..wire.codec import MAX_VESICLES_PER_FRAME

#: Descriptors a connection may hold unclaimed at any moment: one frame's worth
#: from the incomplete frame and one from the read that completes it.
MAX_HELD_FDS: Final = 2 * MAX_VESICLES_PER_FRAME
_SCM_RIGHTS: Final = int(socket.SCM_RIGHTS)
_SOL_SOCKET: Final = int(socket.SOL_SOCKET)


class FdBudget:
    """Received descriptors that no frame has claimed yet, counted across connections.

    A membrane gives one to all its connections: together they hold at most
    ``limit`` unclaimed descriptors, and the connection whose read would pass
    it is closed.
    """

    __slots__ = ("held", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0


class HeldFds:
    """The descriptors one connection holds for frames still to be claimed (module doc)."""

    __slots__ = ("_budget", "_chunk", "_chunk_at", "queue")

    def __init__(self, budget: FdBudget | None = None) -> None:
        self.queue: collections.deque[int] = collections.deque()
        self._budget = budget
        self._chunk = 0  # descriptors that came with the last read that had any
        self._chunk_at = 0  # ... and the stream offset where that read began

    def __len__(self) -> int:
        return len(self.queue)

    def received(self, ancdata: list[tuple[int, int, bytes]], read_at: int) -> None:
        """Queue the descriptors of one read, which began at stream offset ``read_at``."""
        fds = array.array("i")
        for level, kind, payload in ancdata:
            if level == _SOL_SOCKET and kind == _SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        if not fds:
            return
        self.queue.extend(fds)
        self._chunk = len(fds)
        self._chunk_at = read_at
        budget = self._budget
        if budget is not None:
            budget.held += len(fds)
        if len(self.queue) > MAX_HELD_FDS:
            raise VesicleError(
                f"the peer sent {len(self.queue)} descriptors that no frame has claimed "
                f"(at most {MAX_HELD_FDS} may wait for their frames)"
            )
        if budget is not None and budget.held > budget.limit:
            raise VesicleError(
                f"the membrane's connections hold {budget.held} unclaimed descriptors, more "
                f"than its limit of {budget.limit}"
            )

    def take(self, count: int) -> list[int] | None:
        """Claim the next ``count`` descriptors for a complete frame, or None if fewer came."""
        if count > len(self.queue):
            return None
        if self._budget is not None:
            self._budget.held -= count
        queue = self.queue
        return [queue.popleft() for _ in range(count)]

    def check(self, buffered: int, received: int) -> None:
        """Every complete frame was consumed: may what is still held be claimed?

        ``buffered`` is the bytes of the incomplete frame held by the decoder,
        ``received`` the bytes received so far. Raises VesicleError for
        descriptors with no incomplete frame, from a read before the one that
        began the incomplete frame, or more than that read brought.
        """
        held = len(self.queue)
        if not held:
            return
        if not buffered:
            raise VesicleError(f"{held} descriptors arrived that no frame references")
        if held > self._chunk or received - buffered < self._chunk_at:
            raise VesicleError(
                f"{held} descriptors are held for no frame: descriptors must arrive with "
                "the first byte of the frame that references them"
            )

    def close(self) -> None:
        """Close every descriptor held (the connection is closing)."""
        if self._budget is not None:
            self._budget.held -= len(self.queue)
        while self.queue:
            os.close(self.queue.popleft())

"""CellDown delivery: bounded in concurrency, in queued memory, and in time per watcher.

Theory of operation
-------------------
Every :class:`~cellmesh.actors.watches.Notify` the root carries out is
:meth:`CellDownPost.post`-ed here. Each watcher has one FIFO queue and at
most one delivery task: the task waits for one of ``concurrency`` slots
(a :class:`trio.CapacityLimiter` shared by all watchers), connects to the
watcher's membrane once, fires the queued notices in order, and ends when
the queue is empty. So, whatever cells do:

* at most ``concurrency`` connections (file descriptors) are used for
  deliveries at once, and at most one task exists per watcher;
* queued notices are bounded by the watcher's monitor and link bounds
  (:mod:`cellmesh.actors.watches` counts every notice until it is reported
  here as delivered or dropped);
* a watcher that cannot be reached, or does not answer one notice within
  its ``start_timeout`` plus 5 s (it may be restarting), has everything
  queued for it dropped, logged once with the count: a dead or stuck watcher
  cannot hold a slot or memory for long.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from pathlib import Path
from typing import Final

import attrs
import trio

from ..errors import CellmeshError, RemoteCellError
from ..transport.synapse import Synapse
from ._manifest_model import DEFAULT_CELLDOWN_CONCURRENCY
from ._tasks import Background
from .control import CellDown

#: Extra seconds, beyond the watcher's start_timeout, one notice may take.
_GRACE: Final = 5.0
#: The largest frame a watcher may send the root (answers to CellDown are null).
_REPLY_LIMIT: Final = 64 * 1024


@attrs.frozen(kw_only=True)
class Recipient:
    """Where a watcher is reached and how long one notice to it may take."""

    socket_path: Path
    timeout: float


@attrs.define(eq=False)
class CellDownPost:
    """Queues and delivers CellDown notices (see the module doc).

    ``recipient(name)`` says where watcher ``name`` is (None: it is gone, its
    notices are dropped); ``settled(name, n)`` is told whenever ``n`` of its
    notices were delivered or dropped.
    """

    tasks: Background
    recipient: Callable[[str], Recipient | None]
    settled: Callable[[str, int], None]
    log: Callable[[str], None]
    concurrency: int = DEFAULT_CELLDOWN_CONCURRENCY
    _queues: dict[str, collections.deque[CellDown]] = attrs.field(factory=dict, init=False)
    _limiter: trio.CapacityLimiter = attrs.field(init=False)
    _idle: trio.Event = attrs.field(factory=trio.Event, init=False)

    def __attrs_post_init__(self) -> None:
        self._limiter = trio.CapacityLimiter(self.concurrency)
        self._idle.set()

    def post(self, watcher: str, down: CellDown) -> None:
        """Queue ``down`` for ``watcher``; start its delivery task if it has none."""
        queue = self._queues.get(watcher)
        if queue is not None:
            queue.append(down)
            return
        self._queues[watcher] = collections.deque([down])
        if self._idle.is_set():
            self._idle = trio.Event()
        self.tasks.start_soon(self._deliver, watcher, name=f"CellDown delivery to {watcher}")

    def pending(self, watcher: str) -> int:
        """Notices queued for ``watcher``."""
        queue = self._queues.get(watcher)
        return 0 if queue is None else len(queue)

    @property
    def active(self) -> int:
        """Watchers with a delivery task (queued or being delivered to)."""
        return len(self._queues)

    async def wait_idle(self) -> None:
        """Return once nothing is queued or being delivered."""
        await self._idle.wait()

    async def _deliver(self, watcher: str) -> None:
        queue = self._queues[watcher]
        try:
            async with self._limiter:
                while queue:
                    where = self.recipient(watcher)
                    if where is None:
                        return
                    try:
                        await self._send(watcher, where, queue)
                    except (CellmeshError, OSError) as exc:
                        self.log(f"root: CellDown for {watcher} not delivered: {exc}; "
                                 f"dropping {len(queue)} notice(s)")
                        return
        finally:
            # Whatever is left (gone, unreachable, failed, cancelled) is dropped.
            if self._queues.get(watcher) is queue:
                del self._queues[watcher]
                if not self._queues:
                    self._idle.set()
            if queue:
                self.settled(watcher, len(queue))
                queue.clear()

    async def _send(
        self, watcher: str, where: Recipient, queue: collections.deque[CellDown]
    ) -> None:
        patience = where.timeout + _GRACE
        async with Synapse.grow(
            watcher, socket_path=where.socket_path, client_name="root", connect_timeout=patience,
            max_frame_size=_REPLY_LIMIT,  # a CellDown's reply is null: take no more
        ) as syn:
            while queue:
                with trio.move_on_after(patience) as scope:
                    try:
                        await syn.fire(queue[0])
                    except RemoteCellError as exc:  # its on_cell_down failed: it was delivered
                        self.log(f"root: {watcher} failed on a CellDown: {exc}")
                if scope.cancelled_caught:
                    raise _Stuck(watcher, patience)
                queue.popleft()
                self.settled(watcher, 1)


class _Stuck(CellmeshError):
    def __init__(self, watcher: str, seconds: float) -> None:
        super().__init__(f"{watcher} took longer than {seconds:g} s to take a notice")


__all__ = ["CellDownPost", "Recipient"]

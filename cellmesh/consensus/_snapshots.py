"""Local snapshots built off the event loop (section 7 of the dissertation).

Theory of operation
-------------------
A node takes a local snapshot (and compacts its log) every
``snapshot_every`` applied entries. Serializing a large state can take
longer than an election timeout: done on the event loop, the node sends no
heartbeats and answers no one meanwhile, and since every replica reaches
the same index at about the same time, all of them stall together. A
state machine with ``snapshot_job`` (:class:`~cellmesh.consensus._driver.
BackgroundSnapshots`) avoids that:

1. the ready loop, between two Readys, calls ``snapshot_job()``: the machine
   captures its state at the applied index, cheaply;
2. a task runs the returned function through the node's
   :class:`~cellmesh.consensus._driver.SyncRunner` (a worker thread) while
   the loop goes on applying, sending and answering;
3. the ready loop, between two later Readys, compacts the log with the bytes
   and saves the snapshot -- unless the log moved past that index meanwhile
   (a snapshot from the leader replaced it): then the result is dropped.

One build at a time. A job that raises ends the node, as a state machine
that raises in ``apply`` does. A stopping node does not wait for a build in
a worker thread (:func:`~cellmesh.consensus._driver.run_in_thread_abandoning`).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import trio

from cellmesh.consensus._driver import SyncRunner


@attrs.define(eq=False)
class SnapshotBuilds:
    """The background build of one local snapshot at a time (module doc)."""

    run_sync: SyncRunner
    #: Called when a build has finished (the ready loop should look).
    wake: Callable[[], None]
    #: The applied index of the build in flight, if any.
    building: int | None = None
    _built: tuple[int, bytes] | None = None

    @property
    def busy(self) -> bool:
        """A build is running, or its result waits to be taken."""
        return self.building is not None or self._built is not None

    def start(self, nursery: trio.Nursery, index: int, job: Callable[[], bytes]) -> None:
        """Run ``job`` (the snapshot at applied ``index``) in the background."""
        if self.busy:
            raise RuntimeError("a snapshot build is already in flight")
        self.building = index
        nursery.start_soon(self._build, index, job)

    async def _build(self, index: int, job: Callable[[], bytes]) -> None:
        try:
            data = await self.run_sync(job)
        finally:
            self.building = None
        if not isinstance(data, bytes):
            raise TypeError(f"a snapshot job must return bytes, got {type(data).__name__}")
        self._built = (index, data)
        self.wake()

    def take(self) -> tuple[int, bytes] | None:
        """The finished build's ``(index, data)``, once; None if there is none."""
        built, self._built = self._built, None
        return built


__all__ = ["SnapshotBuilds"]

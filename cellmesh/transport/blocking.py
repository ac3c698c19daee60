"""A blocking client to a cell, for scripts and notebooks: ``cellmesh.connect(name)``.

Theory of operation
-------------------
:class:`BlockingSynapse` runs an asyncio :class:`~cellmesh.transport.aio.Synapse`
on a private event loop in a daemon thread of its own, and every method
submits a coroutine to that loop and waits for it
(``asyncio.run_coroutine_threadsafe``). So it works where no event loop may
be started (a Jupyter notebook already runs one in the main thread) and
from any number of threads at once (their calls are pipelined on the one
connection).

A call that is given up -- its ``timeout`` passes, or Ctrl-C interrupts the
wait -- is cancelled in the loop, which sends ``cancel`` to the cell, as
with the async clients. ``close`` (or leaving the ``with`` block) closes the
connection and stops the thread. Errors are the same classes as everywhere:
:class:`~cellmesh.CellUnavailable`, :class:`~cellmesh.RemoteCellError`,
:class:`~cellmesh.UnexpectedReply`, ...; a timeout is the builtin
:class:`TimeoutError`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import warnings
import weakref
from collections.abc import Coroutine, Iterable
from types import TracebackType
from typing import Any, TypeVar

from ..errors import ConnectionClosed
from ..wire.replies import R, Request
from .aio import Synapse

T = TypeVar("T")


class BlockingSynapse:
    """A cell client with plain blocking methods (see the module doc). Use :func:`connect`."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        """Connect to cell ``name`` (arguments as for ``cellmesh.aio.Synapse.connect``)."""
        self.name = name
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=_serve_loop, args=(self._loop,), name=f"cellmesh-synapse-{name}",
            daemon=True,
        )
        self._thread.start()
        self._closed = False
        try:
            self._syn: Synapse = self._run(Synapse.connect(name, **kwargs), None)
        except BaseException:
            self._stop()
            raise
        # Dropped without close(): warn, as an unclosed file does, and free the
        # connection and the thread all the same (the loop thread holds no reference
        # to this object, so it can be collected).
        self._finalizer = weakref.finalize(self, _abandon, name, self._loop, self._syn)
        self._finalizer.atexit = False

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()  # the call is cancelled in the cell too
            raise TimeoutError(f"no answer from cell {self.name!r} within {timeout} s") from None
        except BaseException:  # KeyboardInterrupt while waiting: give the call up
            future.cancel()
            raise

    def _live(self) -> Synapse:
        if self._closed:
            raise ConnectionClosed(f"synapse to {self.name!r} is closed")
        return self._syn

    def fire(self, msg: Request[R], *, timeout: float | None = None) -> R:
        """Call the cell and return its reply; ``timeout`` seconds at most (TimeoutError)."""
        return self._run(self._live().fire(msg), timeout)

    def fire_many(self, msgs: Iterable[Request[R]], *, timeout: float | None = None) -> list[R]:
        """Pipeline calls and return their replies in order."""
        return self._run(self._live().fire_many(list(msgs)), timeout)

    def signal(self, msg: Any, *, timeout: float | None = None) -> None:
        """Send a one-way message; ``timeout`` bounds the wait for credit (a cell that
        stopped reading), then :class:`TimeoutError` (it was not sent)."""
        self._run(self._live().signal(msg), timeout)

    def signal_many(self, msgs: Iterable[Any], *, timeout: float | None = None) -> None:
        """Send one-way messages; on ``timeout`` (:class:`TimeoutError`) some of them
        may have been sent."""
        self._run(self._live().signal_many(list(msgs)), timeout)

    @property
    def connected(self) -> bool:
        """True while a live connection exists (the next call may still reconnect)."""
        return not self._closed and self._syn.connected

    def close(self) -> None:
        """Close the connection and stop the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        try:
            self._run(self._syn.aclose(), 10.0)
        finally:
            self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> BlockingSynapse:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _serve_loop(loop: asyncio.AbstractEventLoop) -> None:
    """The client's thread: run ``loop`` until it is stopped, then close it."""
    try:
        loop.run_forever()
    finally:
        loop.close()


def _abandon(name: str, loop: asyncio.AbstractEventLoop, syn: Synapse) -> None:
    """A BlockingSynapse was garbage-collected unclosed: close its connection, end its
    thread (without waiting: this runs wherever the collection happens)."""
    warnings.warn(f"BlockingSynapse to cell {name!r} was never closed: use close() or "
                  "`with cellmesh.connect(...)`", ResourceWarning, stacklevel=2)

    async def shut() -> None:
        try:
            await syn.aclose()
        finally:
            loop.stop()

    with contextlib.suppress(RuntimeError):  # the loop is already closed
        asyncio.run_coroutine_threadsafe(shut(), loop)


def connect(name: str, **kwargs: Any) -> BlockingSynapse:
    """A blocking client to cell ``name``: ``with cellmesh.connect("pong") as p: p.fire(...)``.

    Arguments as for ``cellmesh.aio.Synapse.connect`` (``socket_dir``,
    ``socket_path``, ``registry``, ``client_name``, options).
    """
    return BlockingSynapse(name, **kwargs)


__all__ = ["BlockingSynapse", "connect"]

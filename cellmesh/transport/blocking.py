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
with the async clients. The timeout runs in the loop, around the call: a
call that finished first returns its result, so ``TimeoutError`` from
``signal`` means it was not sent. ``close`` (or leaving the ``with`` block)
closes the connection and stops the thread; the calls other threads are
waiting on end too (no thread stays blocked). Errors are the same classes
as everywhere: :class:`~cellmesh.CellUnavailable`,
:class:`~cellmesh.RemoteCellError`, :class:`~cellmesh.UnexpectedReply`,
...; a timeout is the builtin :class:`TimeoutError`.
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
from typing import Any, Final, TypeVar

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
        #: Guards ``_closed`` and ``_calls``: nothing is submitted once closing began.
        self._lock = threading.Lock()
        self._closed = False
        #: The loop's futures of the calls threads wait for (close() ends any left).
        self._calls: set[concurrent.futures.Future[Any]] = set()
        try:
            self._syn: Synapse = self._run(Synapse.connect(name, **kwargs), None)
        except BaseException:
            self._closed = True
            self._stop(None)
            raise
        # Dropped without close(): warn, as an unclosed file does, and free the
        # connection and the thread all the same (the loop thread holds no reference
        # to this object, so it can be collected).
        self._finalizer = weakref.finalize(self, _abandon, name, self._loop, self._syn)
        self._finalizer.atexit = False

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        """Run ``coro`` in the loop and wait for its outcome.

        The ``timeout`` runs in the loop, around the coroutine: when it passes, the
        coroutine is cancelled and :class:`TimeoutError` raised only if it did not
        finish first, so a call that completed is never reported as timed out.
        """
        with self._lock:
            if self._closed:
                coro.close()
                raise self._closed_error()
            future = asyncio.run_coroutine_threadsafe(
                coro if timeout is None else _within(coro, timeout, self.name), self._loop)
            self._calls.add(future)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise self._closed_error() from None  # ended by close()
        except BaseException:  # KeyboardInterrupt while waiting: give the call up
            future.cancel()  # the call is cancelled in the cell too
            raise
        finally:
            with self._lock:
                self._calls.discard(future)

    def _closed_error(self) -> ConnectionClosed:
        return ConnectionClosed(f"synapse to {self.name!r} is closed")

    def _live(self) -> Synapse:
        if self._closed:
            raise self._closed_error()
        return self._syn

    def fire(self, msg: Request[R], *, timeout: float | None = None) -> R:
        """Call the cell and return its reply; ``timeout`` seconds at most (TimeoutError)."""
        return self._run(self._live().fire(msg), timeout)

    def fire_many(self, msgs: Iterable[Request[R]], *, timeout: float | None = None) -> list[R]:
        """Pipeline calls and return their replies in order."""
        return self._run(self._live().fire_many(list(msgs)), timeout)

    def signal(self, msg: Any, *, timeout: float | None = None) -> None:
        """Send a one-way message; ``timeout`` bounds the wait for credit or for room
        in the send queue (a cell that stopped reading), then :class:`TimeoutError`
        (it was not sent)."""
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
        """Close the connection and stop the thread (idempotent).

        Queued messages get up to ``CLOSE_FLUSH_TIMEOUT`` seconds to leave. Calls
        other threads have in flight fail with :class:`~cellmesh.CellUnavailable`
        (as with ``aclose``), and any call still waiting then raises
        :class:`~cellmesh.ConnectionClosed`: no thread stays blocked. Interrupted
        (Ctrl-C), it closes the socket at once without the flush.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._finalizer.detach()
        self._stop(self._syn)

    def _stop(self, syn: Synapse | None) -> None:
        """Close ``syn`` in the loop, end what still runs there, stop the thread."""
        try:
            shutdown = asyncio.run_coroutine_threadsafe(_shutdown(syn), self._loop)
            try:
                shutdown.result()
            except BaseException:  # KeyboardInterrupt: close the sockets now, unflushed
                if syn is not None:
                    with contextlib.suppress(RuntimeError):  # the loop has ended already
                        self._loop.call_soon_threadsafe(syn._abort, "the synapse was closed")
                raise
        finally:
            self._thread.join()
            self._loop.close()
            with self._lock:
                left = list(self._calls)
            for future in left:  # a coroutine the loop never ended: its thread must not wait
                future.cancel()

    def __enter__(self) -> BlockingSynapse:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


#: At close, how long the loop's other tasks get to end by themselves (the calls in
#: flight just failed), then again once cancelled.
_SETTLE: Final = 1.0


async def _within(coro: Coroutine[Any, Any, T], timeout: float, name: str) -> T:
    """``coro`` with a ``timeout`` that expires only if it has not finished."""
    scope = asyncio.timeout(timeout)
    try:
        async with scope:
            return await coro
    except TimeoutError:
        if scope.expired():
            raise TimeoutError(f"no answer from cell {name!r} within {timeout} s") from None
        raise


async def _shutdown(syn: Synapse | None) -> None:
    """In the loop: close ``syn`` (a cancelled close still closes every socket), let
    every other task end, cancelling those that do not; the loop stops once this
    task has ended (and its waiter has been told)."""
    loop = asyncio.get_running_loop()
    current = asyncio.current_task()
    assert current is not None
    current.add_done_callback(lambda _: loop.stop())
    try:
        if syn is not None:
            await syn.aclose()
    finally:
        if syn is not None:
            syn._abort("the synapse was closed")  # (aclose cancelled before it ran)
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        if tasks:
            _, left = await asyncio.wait(tasks, timeout=_SETTLE)
            for task in left:
                task.cancel()
            if left:
                await asyncio.wait(left, timeout=_SETTLE)


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
    shutdown = _shutdown(syn)
    try:
        asyncio.run_coroutine_threadsafe(shutdown, loop)
    except RuntimeError:  # the loop is already closed
        shutdown.close()


def connect(name: str, **kwargs: Any) -> BlockingSynapse:
    """A blocking client to cell ``name``: ``with cellmesh.connect("pong") as p: p.fire(...)``.

    Arguments as for ``cellmesh.aio.Synapse.connect`` (``socket_dir``,
    ``socket_path``, ``registry``, ``client_name``, options).
    """
    return BlockingSynapse(name, **kwargs)


__all__ = ["BlockingSynapse", "connect"]

"""Background tasks of the root: every one contained, logged and counted; none stops the root.

Theory of operation
-------------------
The root runs many tasks beside its supervision tree: the control socket,
one umbilical server and one activation watcher per cell, CellDown
deliveries, log pumps, standby watchers, clean-ups. A bug or an unforeseen
``OSError`` in any one of them must not cancel the root's nursery (which
would stop every cell). :class:`Background` is the one way the root starts
such a task:

* an exception escaping the task is *contained*: logged with its traceback
  (one line per frame, through the root's log), counted in
  :attr:`Background.failures`, and the task ends;
* a task started with ``restart=True`` (a server that must keep serving:
  the control socket, an umbilical) is started again after a delay that
  grows with consecutive failures (:func:`restart_delay`), until it returns
  normally or is cancelled;
* with :meth:`Background.start`, a failure *before* the task reports
  started propagates to the caller (a socket that cannot be bound is the
  caller's error); only later failures are contained;
* cancellation, ``KeyboardInterrupt``, ``SystemExit`` and ``GeneratorExit``
  always propagate: they are how the root itself stops. Inside an exception
  group only those leaves propagate; the rest is contained.

:meth:`Background.guard` applies the same containment to a synchronous
block (the callbacks the supervisors call into the root).
"""

from __future__ import annotations

import traceback
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Final

import attrs
import trio

#: Exceptions that are how a task is stopped, never a failure to contain.
_STOPS: Final = (trio.Cancelled, KeyboardInterrupt, SystemExit, GeneratorExit)
#: First and longest pause before a failed ``restart=True`` task runs again.
_FIRST_DELAY: Final = 0.1
_MAX_DELAY: Final = 30.0
#: A restarted task that ran this long before failing again starts its back-off afresh.
_HEALTHY_RUN: Final = 60.0


def restart_delay(failures: int) -> float:
    """Seconds to wait before restarting a task that failed ``failures`` times in a row."""
    return min(_MAX_DELAY, _FIRST_DELAY * 2.0 ** max(0, min(failures - 1, 16)))


class _Guard:
    """The context manager of :meth:`Background.guard`."""

    __slots__ = ("_owner", "_what")

    def __init__(self, owner: Background, what: str) -> None:
        self._owner = owner
        self._what = what

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if exc is None:
            return False
        stops, rest = split_stops(exc)
        if rest is not None:
            self._owner._report(self._what, rest)
        if stops is None:
            return True  # contained
        if stops is exc:
            return False  # propagate as it is
        raise stops from None


def split_stops(exc: BaseException) -> tuple[BaseException | None, BaseException | None]:
    """Split ``exc`` into (what must propagate, what may be contained); either may be None."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(_STOPS)
    if isinstance(exc, _STOPS):
        return exc, None
    return None, exc


@attrs.define(eq=False)
class Background:
    """Starts and contains the root's background tasks (see the module doc).

    ``log`` receives one line per event (a failure, then its traceback lines).
    """

    nursery: trio.Nursery
    log: Callable[[str], None]
    #: How many failures were contained so far (for tests and status).
    failures: int = 0

    def start_soon(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str, restart: bool = False
    ) -> None:
        """Run ``fn(*args)`` in the background; its failures are contained."""
        self.nursery.start_soon(self._run, fn, args, name, restart, name=name)

    async def start(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str, restart: bool = False
    ) -> Any:
        """``nursery.start(fn, *args)``: failures before ``started()`` propagate, later ones
        are contained (and, with ``restart``, the task runs again without a task status)."""
        return await self.nursery.start(self._run_started, fn, args, name, restart, name=name)

    def guard(self, what: str) -> _Guard:
        """Contain (log and count) a failure of the ``with`` block; stops still propagate."""
        return _Guard(self, what)

    async def _run(
        self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], name: str, restart: bool
    ) -> None:
        await self._loop(lambda: fn(*args), name, restart, failures=0)

    async def _run_started(
        self,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        name: str,
        restart: bool,
        *,
        task_status: trio.TaskStatus[Any],
    ) -> None:
        started = False

        class _Status:
            def started(self, value: Any = None) -> None:
                nonlocal started
                started = True
                task_status.started(value)

        try:
            await fn(*args, task_status=_Status())
        except BaseException as exc:
            if not started:
                raise  # the caller's error: it is still waiting in start()
            stops, rest = split_stops(exc)
            if stops is not None and rest is None:
                raise
            if rest is not None:
                self._report(name, rest)
            if stops is not None:
                raise stops from None
            if restart:
                await self._loop(
                    lambda: fn(*args, task_status=trio.TASK_STATUS_IGNORED), name, restart,
                    failures=1,
                )

    async def _loop(
        self, call: Callable[[], Awaitable[Any]], name: str, restart: bool, *, failures: int
    ) -> None:
        while True:
            if failures:
                delay = restart_delay(failures)
                self.log(f"root: restarting {name} in {delay:g} s")
                await trio.sleep(delay)
            began = trio.current_time()
            with self.guard(name):
                await call()
                return
            if not restart:
                return
            # A run that lasted a while was healthy: start the back-off afresh.
            failures = 1 if trio.current_time() - began > _HEALTHY_RUN else failures + 1

    def _report(self, what: str, exc: BaseException) -> None:
        self.failures += 1
        self.log(f"root: contained a failure in {what}: {type(exc).__name__}: {exc}")
        for chunk in traceback.format_exception(exc):
            for line in chunk.rstrip("\n").splitlines():
                self.log(f"root:   {line}")


async def kill_when_stuck(
    timeout: float, left: Callable[[], int], kill: Callable[[int], None], *, poll: float = 0.25
) -> None:
    """The root's forced stop: return once ``left()`` (processes still stopping) is 0;
    call ``kill(left())`` once it has not gone down for ``timeout`` seconds.

    Cells stop one after the other (a supervisor stops its children in reverse
    order), so a mesh of many cells takes longer than ``timeout`` in all while
    each one is quick: only a stop that makes no progress is forced. ``left()`` is
    read every ``poll`` s, so the kill comes ``timeout`` s after the last cell
    stopped (not up to twice that, as with one reading per ``timeout``).
    """
    stall = Stall(timeout, left(), trio.current_time())
    while stall.left:
        await trio.sleep(min(poll, timeout))
        now = left()
        if stall.stuck(now, trio.current_time()):
            kill(now)
            return


@attrs.define
class Stall:
    """A count of what is still stopping, which should keep going down: whether it
    has not for ``timeout`` seconds (the root's forced stop, ``down``'s wait). Pure."""

    timeout: float
    #: The lowest count seen, and when it was first seen.
    left: int
    since: float

    def stuck(self, left: int, now: float) -> bool:
        """Note ``left`` at time ``now``; True once it has not gone down for ``timeout``."""
        if left < self.left:
            self.left, self.since = left, now
            return False
        return now - self.since >= self.timeout


__all__ = ["Background", "Stall", "kill_when_stuck", "restart_delay", "split_stops"]

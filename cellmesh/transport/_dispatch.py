"""Handlers, receptors and the trampoline that lets a handler run inline.

A handler is ``async def handler(msg) -> reply | None``. :class:`Receptors`
maps protein types to handlers and is itself a handler.

:func:`start_inline` runs a handler's coroutine up to its first suspension
*in the calling task*. Most handlers never suspend (they compute and return),
so they complete right there with no task spawn, no cancel scope and no
scheduling round trip: that is what makes per-message cost small. When one
does suspend, the calling task keeps it: :func:`resume` forwards the pending
trap to Trio and every later send/throw to the coroutine, exactly as ``await``
would have, so cancel scopes the handler entered stay on the same task.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

import trio

from ..wire.proteins import is_protein

Handler = Callable[[Any], Coroutine[Any, Any, Any]]
H = TypeVar("H", bound=Handler)


class Receptors:
    """Dispatch by protein type: ``@receptors.on(Ping) async def ping(msg): ...``.

    A message whose type has no receptor raises
    :class:`~cellmesh.errors.RemoteCellError` at the caller with code
    ``NO_HANDLER``; the cell keeps serving.
    """

    __slots__ = ("_handlers",)

    def __init__(self, handlers: dict[type, Handler] | None = None) -> None:
        self._handlers: dict[type, Handler] = {}
        for cls, handler in (handlers or {}).items():
            self.add(cls, handler)

    def add(self, cls: type, handler: Handler) -> None:
        """Route messages of protein type ``cls`` to ``handler``."""
        if not is_protein(cls):
            raise TypeError(f"{cls!r} is not a protein class")
        if cls in self._handlers:
            raise ValueError(f"{cls.__qualname__} already has a receptor")
        self._handlers[cls] = handler

    def on(self, cls: type) -> Callable[[H], H]:
        """Decorator form of :meth:`add`."""

        def decorator(handler: H) -> H:
            self.add(cls, handler)
            return handler

        return decorator

    def lookup(self, cls: type) -> Handler | None:
        """The handler for ``cls``, or None."""
        return self._handlers.get(cls)

    @property
    def types(self) -> tuple[type, ...]:
        """The protein types this dispatcher accepts."""
        return tuple(self._handlers)

    async def __call__(self, msg: Any) -> Any:
        handler = self._handlers.get(type(msg))
        if handler is None:
            raise NoReceptor(type(msg).__qualname__)
        return await handler(msg)


def handler_failed(exc: BaseException) -> bool:
    """True if ``exc``, raised by a handler, is that handler's failure: an error
    reply to its caller, not an end of the connection.

    Every ``Exception`` is. So is a ``BaseException`` the handler raised
    itself (``SystemExit``, ``GeneratorExit``, a library's own subclass, even
    a ``Cancelled`` re-raised when nothing cancelled the call): a receptor
    cannot end its cell or its connection by raising. Two are not: a
    cancellation that is real (the call, the connection or the membrane is
    being cancelled: it must propagate to its cancel scope), and
    ``KeyboardInterrupt`` (the process is being interrupted).
    """
    if isinstance(exc, Exception):
        return True
    if isinstance(exc, KeyboardInterrupt) or (
        isinstance(exc, BaseExceptionGroup) and exc.subgroup(KeyboardInterrupt) is not None
    ):
        return False
    return trio.current_effective_deadline() != -math.inf


class NoReceptor(LookupError):
    """No receptor is registered for a message type (reported to the caller)."""


class Suspended:
    """A handler that suspended: its coroutine and the trap it yielded."""

    __slots__ = ("coro", "trap")

    def __init__(self, coro: Coroutine[Any, Any, Any], trap: Any) -> None:
        self.coro = coro
        self.trap = trap


def start_inline(coro: Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
    """Run ``coro`` until it returns or first suspends.

    Returns ``(True, result)`` if it returned, ``(False, Suspended)`` if it
    suspended; exceptions from the handler propagate.
    """
    try:
        trap = coro.send(None)
    except StopIteration as stop:
        return True, stop.value
    return False, Suspended(coro, trap)


@types.coroutine
def resume(suspended: Suspended) -> Generator[Any, Any, Any]:
    """Finish a suspended handler in the current task; returns its result."""
    coro = suspended.coro
    trap = suspended.trap
    while True:
        try:
            value = yield trap
        except BaseException as exc:  # Cancelled, KeyboardInterrupt...: forward them
            try:
                trap = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                trap = coro.send(value)
            except StopIteration as stop:
                return stop.value

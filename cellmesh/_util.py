"""Small helpers shared by the Trio drivers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


@asynccontextmanager
async def open_service_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery for a library's background tasks that never raise on their own.

    Trio wraps every exception leaving a nursery in an ExceptionGroup. When
    the only exception is the one raised by the user's code in the block, we
    re-raise it unwrapped, so ``except CellUnavailable:`` around an ``async
    with`` works as users expect. Several exceptions stay grouped.
    """
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            exc = group.exceptions[0]
            raise exc from exc.__cause__
        raise


def innermost(exc: BaseException) -> BaseException:
    """``exc`` without the one-member exception groups around it.

    Trio wraps what leaves a nursery in an ExceptionGroup; where a failure is
    told to a person (a start failure, the root's last words) the message must
    name the error itself, not "Exceptions from Trio nursery (1 sub-exception)".
    A group of several stays a group.
    """
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def settle(rounds: int) -> None:
    """Yield while other tasks are runnable, at most ``rounds`` times.

    A loop that gathers a batch calls it before taking one, so that work
    other tasks already have in hand (arrived messages, queued proposals)
    joins this batch, however the scheduler ordered the tasks.
    """
    for _ in range(rounds):
        if trio.lowlevel.current_statistics().tasks_runnable == 0:
            return
        await trio.lowlevel.checkpoint()


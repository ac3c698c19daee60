"""The command line's client of the root's control socket (one for every command)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ..actors._rootlock import read_root_pid, root_is_running
from ..actors.control import Refused
from ..actors.errors import RootError, RootNotRunning, RootUnreachable
from ..actors.lastwords import read_last_words
from ..config import Paths
from ..errors import CellUnavailable
from ..transport._client_core import NO_HELLO
from ..transport.synapse import Synapse


class RootRefused(RootError):
    """The root refused an operator request; the message is its one-line reason.

    ``error`` is the class name of the root's refusal (``UnknownCell``,
    ``RootRequestError``, ...), as data.
    """

    def __init__(self, error: str, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message


@contextlib.asynccontextmanager
async def open_root(paths: Paths) -> AsyncIterator[Synapse]:
    """A synapse to the root at ``paths.umbilical``.

    Raises :class:`~cellmesh.actors.errors.RootNotRunning` when nothing
    listens there, or when the root goes away while the block uses it, and
    :class:`~cellmesh.actors.errors.RootUnreachable` when a root is running
    but did not serve us (its control socket at its connection limit).
    """
    try:
        async with Synapse.grow(
            "mitosis", socket_path=paths.umbilical, client_name="cellmesh-cli",
            connect_timeout=10.0,
        ) as syn:
            yield syn
    except CellUnavailable as exc:
        if root_is_running(paths):
            reason = exc.reason
            if reason == NO_HELLO:  # (the transport's words are about cells)
                reason = "it accepted the connection but did not answer within 10 s " \
                    "(stopped, or too busy)"
            raise RootUnreachable(str(paths.umbilical), read_root_pid(paths), reason) from None
        raise RootNotRunning(str(paths.umbilical), last_words_of(paths)) from None


def last_words_of(paths: Paths) -> str | None:
    """How the last root of ``paths`` ended (its last-words record), or None."""
    words = read_last_words(paths)
    if words is None:
        return None
    return words.summary(now=time.time(), alive=Path(f"/proc/{words.pid}").exists())


async def ask_root(syn: Synapse, msg: Any) -> Any:
    """Send one control request on ``syn``; a :class:`Refused` answer raises
    :class:`RootRefused`."""
    reply = await syn.fire(msg)
    if isinstance(reply, Refused):
        raise RootRefused(reply.error, reply.message)
    return reply


async def control_call(paths: Paths, msg: Any) -> Any:
    """Send one control request to the root and return its answer (see :func:`ask_root`)."""
    async with open_root(paths) as syn:
        return await ask_root(syn, msg)


__all__ = ["RootRefused", "ask_root", "control_call", "last_words_of", "open_root"]

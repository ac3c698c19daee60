"""The command line's client of the root's control socket (one for every command).

Which error says what: nothing listens and no root holds the lock:
:class:`~cellmesh.actors.errors.RootNotRunning` (with the last root's last
words); a root holds the lock but did not serve us:
:class:`~cellmesh.actors.errors.RootUnreachable`; the root closed the
connection while serving a request and then exited -- a ``cellmesh down``
or a signal during a long request (``replicas``, ``wipe``, ``swap``):
:class:`RootStopped`, which says how it stopped (its last words) and what
became of the request, as far as the client can know.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, Final

import trio

from ..actors._proc import is_live
from ..actors._rootlock import read_root_pid, root_is_running
from ..actors.control import ChangeReplicas, Refused, StatusRequest, WipeReplica
from ..actors.errors import RootError, RootNotRunning, RootUnreachable
from ..actors.lastwords import LastWords, read_last_words
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


#: How long a command whose connection the root closed in the middle of a request
#: waits for that root to exit (a stopping root gives its cells ``down --timeout``
#: seconds, 10 by default, then cleans up), to tell a root that stopped from one
#: that runs on.
STOP_PATIENCE: Final = 30.0

#: What became of a request cut short by the root's stop, by request type (any
#: other: :data:`UNKNOWN_OUTCOME`). A membership change keeps a replica it was
#: adding or wiping recorded as joining, which the next start finishes (docs/root.md).
_CUT_SHORT: Final[dict[type, str]] = {
    StatusRequest: "",
    ChangeReplicas: "the change stopped part-way: the next `up` completes the join of a "
                    "replica it was adding, then applies the manifest's `replicas` "
                    "(the root's log says how far it got)",
    WipeReplica: "the wipe stopped part-way: the next `up` has the leader add the replica "
                 "back; wipe it again then if its data was not wiped yet (the root's log "
                 "says whether it was)",
}
#: What is said of a request the root stopped serving, when nothing more is known.
UNKNOWN_OUTCOME: Final = "whether the request took effect is unknown (see the root's log)"


class RootStopped(RootNotRunning):
    """The root stopped while it served this request (it closed the connection, then
    exited): ``pid`` is the root's, ``words`` its last words (None when it left
    none of its own: killed outright), ``outcome`` what became of the request
    (empty: nothing to say, a read).

    A :class:`~cellmesh.actors.errors.RootNotRunning`: no root runs now.
    """

    def __init__(
        self, path: str, pid: int | None, words: LastWords | None, outcome: str = "",
    ) -> None:
        who = "the root" if pid is None else f"the root (pid {pid})"
        details = [outcome] if outcome else []
        if words is None or words.state != "stopped":
            how = "ended without last words (killed by a signal?)"
        elif words.clean:
            how = f"stopped on request ({words.reason or '`cellmesh down`, or a signal'})"
        else:
            how = "stopped"
            details.insert(0, words.reason)
        self.pid = pid
        self.words = words
        self.outcome = outcome
        text = f"{who} {how} while it served this request"
        RootError.__init__(self, text + (f": {'; '.join(details)}" if details else ""))
        self.path = path
        self.last_words = None

    def for_request(self, msg: Any) -> RootStopped:
        """This error, saying what became of ``msg`` (:data:`_CUT_SHORT`)."""
        outcome = _CUT_SHORT.get(type(msg), UNKNOWN_OUTCOME)
        return RootStopped(self.path, self.pid, self.words, outcome)


@contextlib.asynccontextmanager
async def open_root(paths: Paths) -> AsyncIterator[Synapse]:
    """A synapse to the root at ``paths.umbilical``.

    Raises :class:`~cellmesh.actors.errors.RootNotRunning` when nothing
    listens there, :class:`~cellmesh.actors.errors.RootUnreachable` when a
    root is running but did not serve us (its control socket at its
    connection limit), and :class:`RootStopped` when the root closes the
    connection while the block uses it and then exits within
    :data:`STOP_PATIENCE` seconds (a root that runs on after that:
    RootUnreachable).
    """
    pid = read_root_pid(paths)
    connected = False
    try:
        async with Synapse.grow(
            "mitosis", socket_path=paths.umbilical, client_name="cellmesh-cli",
            connect_timeout=10.0,
        ) as syn:
            connected = True
            yield syn
    except CellUnavailable as exc:
        if connected:  # it went away while serving us: stopping, or gone
            pid = pid or read_root_pid(paths)
            if await _root_exited(paths):
                words = read_last_words(paths)
                mine = words if words is not None and words.pid == pid else None
                raise RootStopped(str(paths.umbilical), pid, mine) from None
            raise RootUnreachable(
                str(paths.umbilical), pid,
                f"it closed the connection in the middle of it ({exc.reason}) and still "
                f"runs {STOP_PATIENCE:g} s later",
            ) from None
        if root_is_running(paths):
            reason = exc.reason
            if reason == NO_HELLO:  # (the transport's words are about cells)
                reason = "it accepted the connection but did not answer within 10 s " \
                    "(stopped, or too busy)"
            raise RootUnreachable(str(paths.umbilical), read_root_pid(paths), reason) from None
        raise RootNotRunning(str(paths.umbilical), last_words_of(paths)) from None


async def _root_exited(paths: Paths) -> bool:
    """Wait up to :data:`STOP_PATIENCE` s until no root holds the lock of ``paths``
    (it releases it as it exits, after its last words); False if one still does."""
    with trio.move_on_after(STOP_PATIENCE):
        while root_is_running(paths):
            await trio.sleep(0.05)
        return True
    return False


def last_words_of(paths: Paths) -> str | None:
    """How the last root of ``paths`` ended (its last-words record), or None."""
    words = read_last_words(paths)
    if words is None:
        return None
    return words.summary(now=time.time(), alive=is_live(words.pid))  # (a zombie is not)


async def ask_root(syn: Synapse, msg: Any) -> Any:
    """Send one control request on ``syn``; a :class:`Refused` answer raises
    :class:`RootRefused`."""
    reply = await syn.fire(msg)
    if isinstance(reply, Refused):
        raise RootRefused(reply.error, reply.message)
    return reply


async def control_call(paths: Paths, msg: Any) -> Any:
    """Send one control request to the root and return its answer (see :func:`ask_root`).

    A root that stops while it serves ``msg`` raises :class:`RootStopped` saying
    what became of it.
    """
    try:
        async with open_root(paths) as syn:
            return await ask_root(syn, msg)
    except RootStopped as exc:
        raise exc.for_request(msg) from None


__all__ = [
    "STOP_PATIENCE",
    "UNKNOWN_OUTCOME",
    "RootRefused",
    "RootStopped",
    "ask_root",
    "control_call",
    "last_words_of",
    "open_root",
]

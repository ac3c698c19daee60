"""The root's last words: why the last root stopped, kept for ``cellmesh status``.

:func:`~cellmesh.actors.root.serve_root` writes ``<log_dir>/root.last-words.json``
when the mesh is up (``state`` ``running``) and again when the root ends
(``stopped``): its pid, when it started and stopped, whether the stop was
clean (asked for: ``cellmesh down``, SIGTERM) and why it ended otherwise
(the top supervisor gave up, cells could not start). A cancellation is a
clean stop: its owner asked for it. A cancelled root's nurseries raise exception
groups that hold nothing but :class:`trio.Cancelled`; those are taken apart
(:func:`without_cancelled`), so they are neither mistaken for a failure nor
shown as "Exceptions from Trio nursery". The owner can say why it cancels
(:func:`owners_stop_reason`: a foreground root given SIGTERM before its mesh
is up records ``SIGTERM before the mesh was up``). A root killed outright
leaves its ``running`` record behind; :meth:`LastWords.summary` says so when
that pid is gone. Each write replaces the file atomically (a temporary file
renamed over it), so a reader sees one whole record or the previous one.

The file is the root's own (0600 in the private log directory); a reader
still treats it as data: anything unreadable or malformed is "no last words".
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import attrs
import trio

from .._util import innermost
from ..config import Paths, ensure_private_dir
from .control import RestartRecord
from .errors import CellsCannotStart, SupervisorEscalation


class RootLike(Protocol):
    """What :func:`run_with_last_words` needs of a root."""

    @property
    def paths(self) -> Paths: ...

    @property
    def restart_log(self) -> Sequence[RestartRecord]: ...

    async def run(self, *, task_status: Any) -> None: ...

#: The file under the log directory.
FILE_NAME: Final = "root.last-words.json"
#: A reason longer than this is cut (it is shown on one terminal line or two).
MAX_REASON: Final = 4000


def last_words_path(paths: Paths) -> Path:
    """``<log_dir>/root.last-words.json``."""
    return paths.log_dir / FILE_NAME


@attrs.frozen(kw_only=True)
class LastWords:
    """One record of the file (see the module doc)."""

    pid: int
    state: Literal["running", "stopped"]
    started_at: float
    stopped_at: float | None = None
    clean: bool = False
    reason: str = ""
    manifest: str = ""

    def to_json(self) -> dict[str, object]:
        """The record as a JSON object."""
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, doc: object) -> LastWords | None:
        """The record in ``doc``, or None when it is not one."""
        if not isinstance(doc, dict):
            return None
        pid, state, started = doc.get("pid"), doc.get("state"), doc.get("started_at")
        stopped, reason = doc.get("stopped_at"), doc.get("reason", "")
        manifest = doc.get("manifest", "")
        if not (
            type(pid) is int and state in ("running", "stopped")
            and isinstance(started, int | float) and not isinstance(started, bool)
            and (stopped is None or (isinstance(stopped, int | float)
                                     and not isinstance(stopped, bool)))
            and isinstance(reason, str) and isinstance(manifest, str)
        ):
            return None
        return cls(
            pid=pid, state=state, started_at=float(started),
            stopped_at=None if stopped is None else float(stopped),
            clean=doc.get("clean") is True, reason=reason[:MAX_REASON], manifest=manifest,
        )

    def summary(self, *, now: float, alive: bool) -> str:
        """One or two lines for ``cellmesh status`` when no root answers.

        ``alive``: whether a process with :attr:`pid` still exists.
        """
        if self.state == "running":
            if alive:
                return f"the last root (pid {self.pid}) is not answering"
            up = duration_text(now - self.started_at)
            return (
                f"the last root (pid {self.pid}, started {up} ago) ended without last words "
                "(killed by a signal?); see its log"
            )
        when = duration_text(now - (self.stopped_at or now))
        if self.clean:  # (a clean stop's reason, if any, says who asked and when)
            why = f" ({self.reason})" if self.reason else ""
            return f"the last root (pid {self.pid}) stopped {when} ago on request{why}"
        return f"the last root (pid {self.pid}) stopped {when} ago: {self.reason}"


def duration_text(seconds: float) -> str:
    """The two largest units of a duration: ``45s``, ``3m05s``, ``2h07m``, ``3d04h``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02}m"
    return f"{s // 86400}d{s % 86400 // 3600:02}h"


def write_last_words(paths: Paths, words: LastWords) -> None:
    """Replace the file with ``words`` (atomically; an OSError is not raised)."""
    path = last_words_path(paths)
    tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}")
    try:
        ensure_private_dir(path.parent)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(words.to_json(), f)
        os.replace(tmp, path)
    except OSError:  # (a full disk: leave no partial temp file behind)
        with contextlib.suppress(OSError):
            tmp.unlink()


def read_last_words(paths: Paths) -> LastWords | None:
    """The record in the file, or None (no file, unreadable, malformed)."""
    try:
        text = last_words_path(paths).read_text()
    except (OSError, UnicodeDecodeError):
        return None
    try:
        return LastWords.from_json(json.loads(text))
    except ValueError:
        return None


def without_cancelled(exc: BaseException) -> BaseException | None:
    """``exc`` without the :class:`trio.Cancelled` in it; None when nothing else is.

    A cancelled nursery raises an exception group of its tasks' ``Cancelled``
    (nested groups too), which the cancelled scope absorbs further out: such
    a group is a cancellation, not a failure. A group that also holds a real
    error keeps only that error (and the groups around it).
    """
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(trio.Cancelled)[1]
    return None if isinstance(exc, trio.Cancelled) else exc


def why_it_ended(root: RootLike, exc: BaseException) -> str:
    """The reason of an unclean end, for the record (bounded).

    The ``Cancelled`` of the tasks the failure cancelled are left out
    (:func:`without_cancelled`), so the error itself is named.
    """
    exc = innermost(without_cancelled(exc) or exc)
    if isinstance(exc, SupervisorEscalation):
        text = f"the top supervisor gave up ({exc.reason}, child {exc.child_id!r})"
        last = next((r for r in reversed(root.restart_log) if r.cell == exc.child_id), None)
        if exc.detail:
            text += f": {exc.detail}"
        elif last is not None:
            text += f"; its last exit: {last.reason}"
        elif root.restart_log:
            # A sub-supervisor gave up: the cause is the last failure beneath it.
            latest = root.restart_log[-1]
            text += f"; the last failure: {latest.cell}: {latest.reason}"
    elif isinstance(exc, CellsCannotStart):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text[:MAX_REASON]


@attrs.define(eq=False)
class StopReason:
    """Why the owner of a root cancels it, for the root's last words.

    ``text`` (say ``SIGTERM before the mesh was up``) is set by the owner
    before it cancels; empty: ``cancelled by its owner``.
    """

    text: str = ""


_STOP_REASON: contextvars.ContextVar[StopReason | None] = contextvars.ContextVar(
    "cellmesh_root_stop_reason", default=None
)


@contextlib.contextmanager
def owners_stop_reason() -> Iterator[StopReason]:
    """A :class:`StopReason` for the roots run within the block.

    A root started inside it -- in this task or a task started from it (Trio
    tasks inherit the context they were started in) -- records the reason's
    ``text`` as it stood when the root was cancelled, as a clean stop.
    """
    reason = StopReason()
    token = _STOP_REASON.set(reason)
    try:
        yield reason
    finally:
        _STOP_REASON.reset(token)


def _cancel_reason() -> str:
    """The owner's :class:`StopReason`, or the generic reason of a cancellation."""
    reason = _STOP_REASON.get()
    return reason.text if reason is not None and reason.text else "cancelled by its owner"


async def run_with_last_words(
    root: RootLike, manifest: str, task_status: trio.TaskStatus[Any]
) -> None:
    """``root.run()``, writing the ``running`` record once it is up and the
    ``stopped`` record when it ends (see the module doc).

    A cancellation -- a ``Cancelled``, or an exception group of nothing but
    ``Cancelled`` -- is a clean stop, with the owner's reason
    (:func:`owners_stop_reason`); anything else is unclean, with
    :func:`why_it_ended`.
    """
    started = time.time()

    class Announce:
        def started(self, value: object = None) -> None:
            write_last_words(root.paths, LastWords(
                pid=os.getpid(), state="running", started_at=started, manifest=manifest,
            ))
            task_status.started(value)

    clean, reason = True, ""
    try:
        await root.run(task_status=Announce())
    except BaseException as exc:
        if without_cancelled(exc) is None:
            reason = _cancel_reason()
        else:
            clean, reason = False, why_it_ended(root, exc)
        raise
    finally:
        write_last_words(root.paths, LastWords(
            pid=os.getpid(), state="stopped", started_at=started, stopped_at=time.time(),
            clean=clean, reason=reason, manifest=manifest,
        ))


__all__ = [
    "FILE_NAME",
    "LastWords",
    "RootLike",
    "StopReason",
    "duration_text",
    "last_words_path",
    "owners_stop_reason",
    "read_last_words",
    "run_with_last_words",
    "why_it_ended",
    "without_cancelled",
    "write_last_words",
]

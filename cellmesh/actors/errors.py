"""Errors of the actor layer: supervision requests, escalation, and the DNA cache.

Split by blame, like :mod:`cellmesh.errors`:

* :class:`InvalidSupervisorSpec` -- the caller described a supervisor or a
  child badly (a :class:`~cellmesh.errors.ConfigError`).
* :class:`SupervisorRequestError` and its subclasses -- a request that the
  supervisor's current state refuses (OTP's ``{error, running}``,
  ``{error, not_found}``, ...). Each carries ``child_id``.
* :class:`SupervisorEscalation` -- a supervisor gave up: its restart intensity
  was exceeded, or a child failed to start while the supervisor started. It
  carries ``reason``; the supervisor's children are already stopped when it is
  raised.
* :class:`DnaError` -- the DNA cache could not provide an entry;
  :class:`DnaSourceError` blames the cell's source (missing, a symlink, a
  syntax error), :class:`DnaCacheError` the cache directory.

This module imports nothing but :mod:`cellmesh.errors`, so the pure policy
module may import it.
"""

from __future__ import annotations

from ..errors import CellmeshError, ConfigError


class InvalidSupervisorSpec(ConfigError):
    """A supervisor or child specification is invalid (``source`` names the field)."""


class SupervisorRequestError(CellmeshError):
    """A request the supervisor refuses in its current state; ``child_id`` names the child."""

    def __init__(self, child_id: str, problem: str) -> None:
        super().__init__(f"child {child_id!r}: {problem}" if child_id else problem)
        self.child_id = child_id
        self.problem = problem


class UnknownChild(SupervisorRequestError):
    """No child with this id is known to the supervisor (OTP ``{error, not_found}``)."""

    def __init__(self, child_id: str) -> None:
        super().__init__(child_id, "no such child")


class ChildAlreadyPresent(SupervisorRequestError):
    """A child with this id already exists (OTP ``already_present`` / ``already_started``).

    ``running`` tells which of the two.
    """

    def __init__(self, child_id: str, *, running: bool) -> None:
        super().__init__(child_id, "already started" if running else "already present")
        self.running = running


class ChildRunning(SupervisorRequestError):
    """The request needs a stopped child but this one runs (OTP ``{error, running}``)."""

    def __init__(self, child_id: str) -> None:
        super().__init__(child_id, "is running")


class NotSupported(SupervisorRequestError):
    """The request does not apply to this strategy (OTP ``{error, simple_one_for_one}``)."""


class SupervisorStopped(SupervisorRequestError):
    """The supervisor has stopped (shut down or escalated) and takes no more requests."""

    def __init__(self, child_id: str = "") -> None:
        super().__init__(child_id, "the supervisor has stopped")


class ChildStartFailed(SupervisorRequestError):
    """Starting a child on request failed; ``reason`` is the start error's text."""

    def __init__(self, child_id: str, reason: str) -> None:
        super().__init__(child_id, f"failed to start: {reason}")
        self.reason = reason

    @staticmethod
    def reason_of(child_id: str, text: str) -> str:
        """``text`` without the ``child X: failed to start:`` this class's own message
        puts in front (so a reason wrapped again says it once)."""
        return text.removeprefix(f"child {child_id!r}: failed to start: ")


class SupervisorEscalation(CellmeshError):
    """A supervisor gave up and stopped all its children; ``reason`` says why.

    ``reason`` is ``"reached_max_restart_intensity"`` or
    ``"failed_to_start_child"``; ``child_id`` names the child involved and
    ``detail`` adds the start error, if any.
    """

    def __init__(self, reason: str, *, child_id: str, detail: str = "") -> None:
        text = f"supervisor escalates: {reason} (child {child_id!r})"
        if detail:
            text += f": {detail}"
        super().__init__(text)
        self.reason = reason
        self.child_id = child_id
        self.detail = detail


class DnaError(CellmeshError):
    """The DNA cache could not provide an entry for a cell's code."""


class DnaSourceError(DnaError, ConfigError):
    """The cell's source is unusable: missing, a symlink, unreadable, or does not compile."""


class DnaCacheError(DnaError):
    """The cache directory could not hold the entry; ``path`` names what failed."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem




class RootError(CellmeshError):
    """A failure of the root daemon or of a request to it."""


class RootAlreadyRunning(RootError):
    """Another root owns the socket directory (``pid`` from its lock file, if readable)."""

    def __init__(self, pid: int | None, socket_dir: str, *, stopping: bool = False) -> None:
        self.pid = pid
        self.socket_dir = socket_dir
        self.stopping = stopping
        who = f"pid {pid}" if pid is not None else "pid unknown"
        text = f"a root is already running ({who}) for {socket_dir}"
        if stopping:
            text += "; it is stopping: run `cellmesh up` again once it has ended"
        super().__init__(text)


class RootRequestError(RootError):
    """The root refused a request: ``subject`` (a cell name, a message type) and why."""

    def __init__(self, subject: str, problem: str) -> None:
        self.subject = subject
        self.problem = problem
        super().__init__(f"{subject}: {problem}")


class UnknownCell(RootRequestError):
    """The root has no cell ``name``; ``known`` lists (some of) the cells it has."""

    #: At most this many names are listed in the message.
    LISTED = 20

    def __init__(self, name: str, known: list[str]) -> None:
        listed = ", ".join(known[: self.LISTED]) or "none"
        if len(known) > self.LISTED:
            listed += f", and {len(known) - self.LISTED} more"
        super().__init__(name, f"no such cell (cells: {listed})")
        self.known = known
        self.text = f"no cell named {name!r} (cells: {listed})"

    def __str__(self) -> str:
        return self.text


class CellsCannotStart(RootError):
    """The root did not start the mesh: some declared cells' code does not import.

    ``problems`` holds one line per such cell, naming its manifest key
    (``cells.x.entry: module 'kv.nosuch' not found ...``); ``cells`` their names.
    """

    def __init__(self, problems: list[str], cells: list[str]) -> None:
        self.problems = problems
        self.cells = cells
        count = len(problems)
        head = f"{count} cell{'s' if count != 1 else ''} cannot start"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in problems))


class RootUnreachable(RootError):
    """A root is running (it holds its lock) but its control socket did not serve us:
    ``reason`` says why (at its connection limit, not answering)."""

    def __init__(self, path: str, pid: int | None, reason: str) -> None:
        self.path = path
        self.pid = pid
        self.reason = reason
        who = "the root" if pid is None else f"the root (pid {pid})"
        super().__init__(f"{who} is running but did not serve this request on {path}: {reason}")


class RootNotRunning(RootError):
    """Nothing answers on the control socket ``path``.

    ``last_words`` says how the last root ended, when it left a record
    (:mod:`cellmesh.actors.lastwords`); it becomes a second line of the message.
    """

    def __init__(self, path: str, last_words: str | None = None) -> None:
        self.path = path
        self.last_words = last_words
        text = f"no root is running (nothing listens on {path}); start one with `cellmesh up`"
        if last_words:
            text += f"\n{last_words}"
        super().__init__(text)


__all__ = [
    "CellsCannotStart",
    "RootUnreachable",
    "ChildAlreadyPresent",
    "ChildRunning",
    "ChildStartFailed",
    "DnaCacheError",
    "DnaError",
    "DnaSourceError",
    "InvalidSupervisorSpec",
    "NotSupported",
    "RootAlreadyRunning",
    "RootError",
    "RootNotRunning",
    "RootRequestError",
    "SupervisorEscalation",
    "SupervisorRequestError",
    "SupervisorStopped",
    "UnknownCell",
    "UnknownChild",
]

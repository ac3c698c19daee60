"""Lifecycle events of cells as JSON lines: started, exited, destroyed, and hot swaps.

One line per event, appended to ``$CELL_HOME/logs/<cell>.events.jsonl``
(:class:`JsonlEventLog`) or a single path the caller gives. Each line is a
JSON object with at least ``ts`` (Unix time, float), ``event``, ``cell``
(the cell name), ``cell_id`` and ``backend``. ``exited`` adds ``pid``,
``code``, ``signal``, ``signal_name``, ``reason`` (exit|crash|limit|stop),
``limit`` and ``detail``; ``started`` adds ``pid`` and ``limits`` (which
mechanism enforces each limit); ``destroyed`` adds ``clean`` (False when the
process had to be killed) and ``removed`` (host paths cleaned up). The root
adds ``swap_started``, ``swapped``, ``swap_rolled_back`` and ``swap_failed``
(``from_dna``, ``to_dna``, ``outcome``, ``cause``, versions, ``serving_ms``).

The file is bounded: before a line would take it past ``max_bytes``
(:data:`EVENTS_MAX_BYTES`, 1 MiB) it rotates like a cell's output log,
``<file>.{keep-1}`` -> ``<file>.{keep}`` (the oldest is replaced), ...,
``<file>`` -> ``<file>.1`` (:func:`rotate_path`), keeping ``keep``
(:data:`EVENTS_KEEP`, 3) rotated files besides the live one: at most 4 MiB
per cell, however often it crashes. Lines are never split across files.
:func:`read_events` reads the rotated files too, oldest first.

The helpers for numbered rotated files (:func:`rotated_paths`,
:func:`rotate_path`, and :func:`read_since`, which reads what was appended
to a live file since a position across its rotations, by inode) are shared
with the cell output logs of :mod:`cellmesh.actors.logs`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, Literal, Protocol

import attrs

from ..config import Paths, check_cell_name, check_positive_int

EventKind = Literal[
    "started", "exited", "destroyed",
    # the root: a started process reported ready (it serves; a standby never does)
    "ready",
    # hot swaps (written by the root: docs/swap.md)
    "swap_started", "swapped", "swap_rolled_back", "swap_failed",
]

#: An events file rotates before a line would take it past this size.
EVENTS_MAX_BYTES: Final = 1024 * 1024
#: Rotated events files kept besides the live one.
EVENTS_KEEP: Final = 3

_ROTATED_SUFFIX_RE: Final = re.compile(r"\.([1-9][0-9]*)")


def rotated_paths(path: Path) -> list[tuple[int, Path]]:
    """The rotated files ``<path>.N`` of ``path`` as ``(N, path)``, oldest (highest N) first."""
    path = Path(path)
    base = path.name
    found: list[tuple[int, Path]] = []
    try:
        entries = os.listdir(path.parent)
    except FileNotFoundError:
        return found
    for entry in entries:
        if entry.startswith(base):
            m = _ROTATED_SUFFIX_RE.fullmatch(entry, len(base))
            if m is not None:
                found.append((int(m.group(1)), path.parent / entry))
    found.sort(reverse=True)
    return found


def rotate_path(path: Path, keep: int) -> None:
    """Shift ``path`` to ``<path>.1``, ``.N`` to ``.{N+1}``; ``.{keep}`` and beyond are dropped."""
    for n, old in rotated_paths(path):  # highest n first
        with contextlib.suppress(FileNotFoundError):
            if n >= keep:
                old.unlink()  # the oldest kept one is replaced, older ones dropped
            else:
                os.replace(old, f"{path}.{n + 1}")
    with contextlib.suppress(FileNotFoundError):
        os.replace(path, f"{path}.1")


class EventSink(Protocol):
    """Receives lifecycle events; must not raise for I/O trouble it can report."""

    def emit(self, cell: str, event: EventKind, fields: dict[str, object]) -> None:
        """Record one event of ``cell``."""
        ...


def _open_append(target: Path) -> int:
    return os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)


@attrs.define(eq=False)
class JsonlEventLog:
    """Append events as JSON lines to ``<log_dir>/<cell>.events.jsonl`` or one ``path``.

    The file rotates before a line would take it past ``max_bytes`` (a line
    longer than that gets a file of its own), keeping ``keep`` rotated files.
    """

    log_dir: Path | None = None
    path: Path | None = None
    _clock: Callable[[], float] = time.time
    max_bytes: int = EVENTS_MAX_BYTES
    keep: int = EVENTS_KEEP
    #: Events that could not be written (disk full, permissions), and the last error.
    dropped: int = attrs.field(default=0, init=False)
    last_error: OSError | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        check_positive_int("max_bytes", self.max_bytes)
        check_positive_int("keep", self.keep)

    @classmethod
    def for_paths(cls, paths: Paths) -> JsonlEventLog:
        """Events under ``paths.log_dir`` (``$CELL_HOME/logs``)."""
        return cls(log_dir=paths.log_dir)

    def file_for(self, cell: str) -> Path:
        """Where events of ``cell`` go."""
        if self.path is not None:
            return self.path
        if self.log_dir is None:
            raise ValueError("JsonlEventLog needs a log_dir or a path")
        return self.log_dir / f"{check_cell_name(cell)}.events.jsonl"

    def emit(self, cell: str, event: EventKind, fields: dict[str, object]) -> None:
        """Append one line (``O_APPEND``, one ``write``, so concurrent writers never interleave).

        Rotates the file first when the line would take it past
        :attr:`max_bytes`. An I/O failure never propagates into the
        lifecycle operation that emitted the event: it is counted in
        :attr:`dropped` and kept in :attr:`last_error`.
        """
        target = self.file_for(cell)
        record = {"ts": self._clock(), "event": event, "cell": cell, **fields}
        line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
        try:
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = _open_append(target)
            try:
                size = os.fstat(fd).st_size
                if size and size + len(line) > self.max_bytes:
                    os.close(fd)
                    fd = -1
                    rotate_path(target, self.keep)
                    fd = _open_append(target)
                os.write(fd, line)
            finally:
                if fd >= 0:
                    os.close(fd)
        except OSError as exc:
            self.dropped += 1
            self.last_error = exc


@attrs.define(eq=False)
class MemoryEventLog:
    """Keeps events in a list (for tests and the stub backend)."""

    events: list[dict[str, object]] = attrs.Factory(list)

    def emit(self, cell: str, event: EventKind, fields: dict[str, object]) -> None:
        """Record the event in :attr:`events`."""
        self.events.append({"event": event, "cell": cell, **fields})


def parse_events(data: bytes) -> list[dict[str, object]]:
    """The events of JSON lines ``data``; a line that is not an object (torn) is skipped."""
    out: list[dict[str, object]] = []
    for raw in data.split(b"\n"):
        try:
            obj = json.loads(raw)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def pread_all(fd: int, offset: int = 0) -> bytes:
    """Everything in the file ``fd`` from ``offset`` on."""
    parts: list[bytes] = []
    while chunk := os.pread(fd, 1 << 20, offset):
        parts.append(chunk)
        offset += len(chunk)
    return b"".join(parts)


def open_readonly(path: Path) -> int | None:
    """``path`` opened for reading, or None when it does not exist."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None


@attrs.frozen(kw_only=True)
class EventHistory:
    """What :func:`read_event_history` found.

    ``events`` oldest first; ``found`` whether the live file or a rotated one
    exists; ``inode`` the live file's (None when there is none) and ``end``
    where its last complete line ends there (where a follower continues).
    """

    events: list[dict[str, object]]
    found: bool
    inode: int | None
    end: int


def read_event_history(path: Path) -> EventHistory:
    """The events of ``path`` and its rotated files (``.N`` ... ``.1``, then ``path``).

    A torn line (a crash mid-write) is skipped. At most ``keep + 1`` files of
    ``max_bytes`` each are read, so the history a reader parses is bounded
    too (a caller who wants the last N lines merged by time needs every event:
    the file order need not be the order of the times).
    """
    path = Path(path)
    fd = open_readonly(path)  # first: a rotation after this is recognised by inode
    inode: int | None = None
    live = b""
    try:
        if fd is not None:
            inode = os.fstat(fd).st_ino
            live = pread_all(fd)
    finally:
        if fd is not None:
            os.close(fd)
    found = inode is not None
    older: list[bytes] = []
    for _, rotated in rotated_paths(path):  # oldest first
        rfd = open_readonly(rotated)
        if rfd is None:
            continue
        found = True
        try:
            if os.fstat(rfd).st_ino != inode:  # else: rotated since we read it
                older.append(pread_all(rfd))
        finally:
            os.close(rfd)
    end = live.rfind(b"\n") + 1  # a torn last line is the follower's, once whole
    events = [e for data in [*older, live[:end]] for e in parse_events(data)]
    return EventHistory(events=events, found=found, inode=inode, end=end)


@attrs.frozen
class Appended:
    """What :func:`read_since` found: ``(offset, bytes)`` per file, oldest first, and more.

    ``skipped``: bytes between the cursor and these were lost (the file at
    the cursor rotated out, or was truncated); ``inode`` and ``offset``: the
    new position.
    """

    parts: list[tuple[int, bytes]]
    skipped: bool
    inode: int | None
    offset: int


def read_since(live: Path, inode: int | None, offset: int) -> Appended:
    """The bytes appended to ``live`` since (``inode``, ``offset``), across its rotations."""
    for _attempt in range(5):
        fd = open_readonly(live)
        if fd is None:
            return Appended([], False, inode, offset)
        try:
            st = os.fstat(fd)
            if inode in (None, st.st_ino):
                start = offset if inode == st.st_ino else 0
                truncated = st.st_size < start
                start = 0 if truncated else start
                data = pread_all(fd, start)
                return Appended([(start, data)], truncated, st.st_ino, start + len(data))
            chain = _rotated_chain(live, inode, offset, st.st_ino)
            if chain is None:
                continue  # renamed under us while listing: look again
            data = pread_all(fd, 0)
            return Appended([*chain, (0, data)], not chain, st.st_ino, len(data))
        finally:
            os.close(fd)
    return Appended([], False, inode, offset)


def _rotated_chain(
    live: Path, inode: int, offset: int, live_ino: int
) -> list[tuple[int, bytes]] | None:
    """The rest of the old live file ``inode`` and every file rotated after it, oldest first.

    Stops before ``live_ino`` (the live file the caller holds open, if it
    rotated meanwhile), which the caller reads itself.

    None when the files moved while they were opened (the caller retries).
    When the old file is gone (more than ``keep`` rotations since the
    last poll) the chain is empty: what rotated out is skipped.
    """
    opened: list[tuple[Path, int, int]] = []
    try:
        for _, path in rotated_paths(live):
            fd = open_readonly(path)
            if fd is not None:
                opened.append((path, fd, os.fstat(fd).st_ino))
        for path, _, ino in opened:
            try:
                if path.stat().st_ino != ino:
                    return None
            except FileNotFoundError:
                return None
        index = next((i for i, (_, _, ino) in enumerate(opened) if ino == inode), None)
        if index is None:
            return []
        _, old_fd, _ = opened[index]
        parts = [(offset, pread_all(old_fd, offset))]
        for _, fd, ino in opened[index + 1:]:
            if ino == live_ino:
                break
            parts.append((0, pread_all(fd, 0)))
        return parts
    finally:
        for _, fd, _ in opened:
            os.close(fd)


def read_events(path: Path) -> list[dict[str, object]]:
    """The events of ``path`` and its rotated files, oldest first (:func:`read_event_history`)."""
    return read_event_history(path).events


__all__ = [
    "Appended",
    "EVENTS_KEEP",
    "EVENTS_MAX_BYTES",
    "EventHistory",
    "EventKind",
    "EventSink",
    "JsonlEventLog",
    "MemoryEventLog",
    "open_readonly",
    "parse_events",
    "pread_all",
    "read_event_history",
    "read_events",
    "read_since",
    "rotate_path",
    "rotated_paths",
]

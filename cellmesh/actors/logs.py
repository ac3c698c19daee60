"""Captured cell output: a rotating appender, the pipe pump, and the readers ``cellmesh logs`` uses.

Theory of operation
-------------------
The root gives each cell process one pipe for stdout and stderr and runs
:func:`pump_output` on its read end; the pump appends every chunk to the
cell's :class:`RotatingLog` at ``<log_dir>/<name>.log``. When a write would
make the file exceed ``max_bytes`` the log rotates: ``<name>.log.{keep-1}``
-> ``<name>.log.{keep}`` (the oldest is replaced, so dropped), ...,
``<name>.log`` -> ``<name>.log.1``, and a fresh ``<name>.log`` is created.

Byte accounting: every byte given to :meth:`RotatingLog.write` lands in
exactly one file, in order (concatenating ``.log.N`` ... ``.log.1``, ``.log``
gives the stream back, minus what rotated out past ``keep``). A chunk that
does not fit is cut just after its last newline that fits, so lines stay
whole across files whenever the chunk has one; a line longer than the room
left (or than ``max_bytes``) is split across files.

Readers: :func:`read_log` returns the history (rotated files oldest first,
then the live file) merged with the lifecycle events of
:mod:`cellmesh.sandbox._events` as display lines, plus a :class:`LogCursor`
at its end; :class:`LogFollower` continues from a cursor, following the
live file across rotations by inode (the old file is drained through its
new name ``.log.k``, then ``.log.{k-1}`` ... ``.log.1``, then the new
``.log``), so no byte is lost or repeated unless more than ``keep``
rotations happen between two polls. :func:`follow_log` is its Trio loop.

Events carry times, output bytes do not: events are merged at file
granularity (an event is shown after the output of the file that was being
written when it happened, judged by the files' modification times).
"""

from __future__ import annotations

import codecs
import contextlib
import datetime
import json
import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Final

import attrs
import trio

from ..config import check_cell_name, check_positive_int, ensure_private_dir
from ..sandbox._events import read_events

#: Default size of one log file before it rotates.
DEFAULT_MAX_BYTES: Final = 10 * 1024 * 1024
#: Default number of rotated files kept besides the live one.
DEFAULT_KEEP: Final = 5
#: The pump reads at most this much per wake-up.
READ_SIZE: Final = 65536
#: ``on_line`` receives lines at most this long (longer ones arrive in pieces).
MAX_LINE: Final = 65536

_ROTATED_RE: Final = re.compile(r"\.log\.([1-9][0-9]*)$")

#: Which fields each lifecycle event shows, in order (others: every extra field).
_EVENT_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "started": ("pid",),
    "exited": ("code", "signal_name", "reason", "limit", "detail"),
    "destroyed": ("clean",),
    "swap_started": ("from_dna", "to_dna"),
    "swapped": ("outcome", "from_dna", "to_dna", "from_version", "to_version", "serving_ms",
                "state_bytes"),
    "swap_rolled_back": ("from_dna", "to_dna", "to_version", "cause"),
    "swap_failed": ("from_dna", "to_dna", "cause"),
}
_EVENT_COMMON: Final = frozenset({"ts", "event", "cell", "cell_id", "backend"})


def log_path(log_dir: Path, name: str) -> Path:
    """The live output file of cell ``name`` (validates the name)."""
    return Path(log_dir) / f"{check_cell_name(name)}.log"


def events_path(log_dir: Path, name: str) -> Path:
    """The lifecycle events file of cell ``name`` (validates the name)."""
    return Path(log_dir) / f"{check_cell_name(name)}.events.jsonl"


def rotated_files(log_dir: Path, name: str) -> list[tuple[int, Path]]:
    """The rotated files of ``name`` as ``(n, path)``, oldest (highest n) first."""
    base = log_path(log_dir, name).name
    found: list[tuple[int, Path]] = []
    try:
        entries = os.listdir(log_dir)
    except FileNotFoundError:
        return found
    for entry in entries:
        if entry.startswith(base):
            m = _ROTATED_RE.fullmatch(entry, len(base) - len(".log"))
            if m is not None:
                found.append((int(m.group(1)), Path(log_dir) / entry))
    found.sort(reverse=True)
    return found


# ---------------------------------------------------------------- writing


@attrs.define(eq=False)
class RotatingLog:
    """Synchronous appender of one cell's captured output, rotating by size.

    Files are created 0600 in a 0700 directory. :meth:`write` never raises
    ``OSError``: a failed write (disk full) counts its bytes in
    :attr:`dropped_bytes`, keeps the error in :attr:`last_error` and reopens
    the file on the next write, so a pump never stops draining the cell's pipe.
    """

    log_dir: Path
    name: str
    max_bytes: int = DEFAULT_MAX_BYTES
    keep: int = DEFAULT_KEEP
    dropped_bytes: int = attrs.field(default=0, init=False)
    last_error: OSError | None = attrs.field(default=None, init=False)
    _fd: int | None = attrs.field(default=None, init=False)
    _size: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        self.log_dir = Path(self.log_dir)
        check_cell_name(self.name)
        check_positive_int("max_bytes", self.max_bytes)
        check_positive_int("keep", self.keep)

    @property
    def path(self) -> Path:
        """The live file, ``<log_dir>/<name>.log``."""
        return log_path(self.log_dir, self.name)

    def _open(self) -> int:
        if self._fd is None:
            ensure_private_dir(self.log_dir)
            fd = os.open(
                self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            st = os.fstat(fd)
            if st.st_mode & 0o077:
                os.fchmod(fd, 0o600)
            self._fd = fd
            self._size = st.st_size
        return self._fd

    def _write_all(self, fd: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
            self._size += n

    def write(self, data: bytes) -> None:
        """Append ``data``, rotating first wherever it would exceed ``max_bytes``."""
        view = memoryview(data)
        try:
            while view:
                fd = self._open()
                room = self.max_bytes - self._size
                if len(view) <= room:
                    self._write_all(fd, view)
                    view = view[len(view):]
                    break
                cut = bytes(view[:room]).rfind(b"\n") + 1 if room > 0 else 0
                if cut == 0 and self._size > 0:
                    self.rotate()  # start the chunk in a fresh file
                    continue
                if cut == 0:
                    cut = room  # a line longer than max_bytes: split it
                self._write_all(fd, view[:cut])
                view = view[cut:]
                self.rotate()
        except OSError as exc:
            self.dropped_bytes += len(view)
            self.last_error = exc
            self._close_fd()

    def rotate(self) -> None:
        """Close the live file and shift it to ``.log.1`` (``.log.{keep}`` is replaced)."""
        self._close_fd()
        live = self.path
        for n, path in rotated_files(self.log_dir, self.name):  # highest n first
            with contextlib.suppress(FileNotFoundError):
                if n >= self.keep:
                    path.unlink()  # the oldest kept one is replaced, older ones dropped
                else:
                    os.replace(path, f"{live}.{n + 1}")
        with contextlib.suppress(FileNotFoundError):
            os.replace(live, f"{live}.1")
        self._size = 0

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        """Close the live file (a later :meth:`write` reopens it)."""
        self._close_fd()


async def pump_output(
    fd: int, log: RotatingLog, *, on_line: Callable[[bytes], None] | None = None
) -> None:
    """Copy a pipe's bytes into ``log`` until EOF (the cell closed its end).

    ``fd`` is made non-blocking; it is not closed here (the caller owns it).
    ``on_line`` receives each complete line without its newline, in order,
    after the chunk holding it is written; a final unterminated line is
    delivered at EOF, and a line longer than :data:`MAX_LINE` bytes arrives
    in pieces of that size.
    """
    os.set_blocking(fd, False)
    pending = bytearray()
    while True:
        await trio.lowlevel.wait_readable(fd)
        try:
            chunk = os.read(fd, READ_SIZE)
        except BlockingIOError:
            continue
        if not chunk:
            break
        log.write(chunk)
        if on_line is not None:
            pending += chunk
            start = 0
            while (nl := pending.find(b"\n", start)) >= 0:
                on_line(bytes(pending[start:nl]))
                start = nl + 1
            del pending[:start]
            while len(pending) >= MAX_LINE:
                on_line(bytes(pending[:MAX_LINE]))
                del pending[:MAX_LINE]
    if on_line is not None and pending:
        on_line(bytes(pending))


# ---------------------------------------------------------------- reading


def format_event(event: dict[str, object]) -> str:
    """One display line: ``[2026-11-21T07:40:01Z] event exited code=1 reason=crash``."""
    ts = event.get("ts")
    if isinstance(ts, (int, float)) and not isinstance(ts, bool):
        try:
            when = datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            )
        except (OverflowError, OSError, ValueError):
            when = "?"
    else:
        when = "?"
    kind = str(event.get("event", "?"))
    keys = _EVENT_FIELDS.get(kind)
    if keys is None:
        keys = tuple(sorted(k for k in event if k not in _EVENT_COMMON))
    parts = [f"{k}={event[k]}" for k in keys if event.get(k) is not None]
    return " ".join([f"[{when}] event {kind}", *parts])


def _event_ts(event: dict[str, object]) -> float:
    ts = event.get("ts")
    if isinstance(ts, (int, float)) and not isinstance(ts, bool):
        return float(ts)
    return 0.0


@attrs.frozen(kw_only=True)
class LogCursor:
    """Where a reader stopped: the live file's inode and offset, the events offset."""

    inode: int | None
    offset: int
    events_offset: int


@attrs.frozen(kw_only=True)
class LogView:
    """What :func:`read_log` found: display lines, whether anything exists, where it ended."""

    lines: list[str]
    found: bool
    cursor: LogCursor


def _read_fd(fd: int, offset: int) -> bytes:
    parts: list[bytes] = []
    while chunk := os.pread(fd, READ_SIZE * 16, offset):
        parts.append(chunk)
        offset += len(chunk)
    return b"".join(parts)


def _open_ro(path: Path) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None


def _split_lines(data: bytes) -> list[str]:
    return data.decode("utf-8", errors="replace").splitlines()


def read_log(log_dir: Path, name: str, *, lines: int | None = None) -> LogView:
    """The cell's output (rotated files oldest first, then the live file) with its events.

    Returns display lines: output lines and :func:`format_event` lines,
    merged at file granularity (see the module docstring); only the last
    ``lines`` of them when given (then only the newest files that hold them
    are read). ``found`` is False when the cell has
    neither a log file nor an events file. The cursor points at the end of
    what was read, for :class:`LogFollower`.
    """
    log_dir = Path(log_dir)
    live = log_path(log_dir, name)
    ev_path = events_path(log_dir, name)
    live_fd = _open_ro(live)  # first: a rotation after this is recognised by inode
    try:
        live_ino = os.fstat(live_fd).st_ino if live_fd is not None else None
        offset = 0
        newest_first: list[tuple[float, bytes]] = []
        if live_fd is not None:
            data = _read_fd(live_fd, 0)
            offset = len(data)
            newest_first.append((float("inf"), data))
        have = sum(data.count(b"\n") for _, data in newest_first)
        rotated = rotated_files(log_dir, name)
        for _, path in reversed(rotated):  # newest first; stop once ``lines`` are there
            if lines is not None and have >= lines:
                with contextlib.suppress(FileNotFoundError):  # older events go before
                    newest_first.append((path.stat().st_mtime, b""))
                break
            fd = _open_ro(path)
            if fd is None:
                continue
            try:
                st = os.fstat(fd)
                if st.st_ino == live_ino:
                    continue  # rotated since we opened the live file: read already
                data = _read_fd(fd, 0)
            finally:
                os.close(fd)
            newest_first.append((st.st_mtime, data))
            have += data.count(b"\n")
        files = newest_first[::-1]
    finally:
        if live_fd is not None:
            os.close(live_fd)
    try:
        events_size = ev_path.stat().st_size
        events = sorted(read_events(ev_path), key=_event_ts)
        found_events = True
    except FileNotFoundError:
        events_size, events, found_events = 0, [], False
    out: list[str] = []
    ei = 0
    for mtime, data in files:
        out.extend(_split_lines(data))
        while ei < len(events) and _event_ts(events[ei]) <= mtime:
            out.append(format_event(events[ei]))
            ei += 1
    out.extend(format_event(e) for e in events[ei:])
    if lines is not None:
        out = out[-lines:] if lines > 0 else []
    return LogView(
        lines=out,
        found=live_ino is not None or bool(files) or found_events,
        cursor=LogCursor(inode=live_ino, offset=offset, events_offset=events_size),
    )


@attrs.define(eq=False)
class LogFollower:
    """Reads what was appended since a :class:`LogCursor`, across rotations.

    :meth:`poll` is one non-blocking step (tests call it directly);
    :func:`follow_log` loops over it. Output is decoded as UTF-8
    incrementally (a character split across reads is kept whole); events
    appear as :func:`format_event` lines.
    """

    log_dir: Path
    name: str
    cursor: LogCursor
    _decoder: codecs.IncrementalDecoder = attrs.field(
        factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"), init=False
    )
    _events_tail: bytes = attrs.field(default=b"", init=False)

    def poll(self) -> str:
        """Return the new output and event lines since the last poll ("" when none)."""
        data = self._poll_output()
        text = self._decoder.decode(data)
        for event in self._poll_events():
            if text and not text.endswith("\n"):
                text += "\n"
            text += format_event(event) + "\n"
        return text

    def _poll_output(self) -> bytes:
        live = log_path(self.log_dir, self.name)
        for _attempt in range(5):
            fd = _open_ro(live)
            if fd is None:
                return b""
            try:
                ino = os.fstat(fd).st_ino
                if self.cursor.inode in (None, ino):
                    start = self.cursor.offset if self.cursor.inode == ino else 0
                    data = _read_fd(fd, start)
                    self._move(ino, start + len(data))
                    return data
                chain = self._rotated_chain(ino)
                if chain is None:
                    continue  # renamed under us while listing: look again
                parts = [*chain, _read_fd(fd, 0)]
                self._move(ino, len(parts[-1]))
                return b"".join(parts)
            finally:
                os.close(fd)
        return b""

    def _move(self, inode: int, offset: int) -> None:
        self.cursor = attrs.evolve(self.cursor, inode=inode, offset=offset)

    def _rotated_chain(self, live_ino: int) -> list[bytes] | None:
        """The rest of the old live file and every file rotated after it, oldest first.

        Stops before ``live_ino`` (the live file the caller holds open, if it
        rotated meanwhile), which the caller reads itself.

        None when the files moved while they were opened (the caller retries).
        When the old file is gone (more than ``keep`` rotations since the
        last poll) the chain is empty: what rotated out is skipped.
        """
        opened: list[tuple[Path, int, int]] = []
        try:
            for _, path in rotated_files(self.log_dir, self.name):
                fd = _open_ro(path)
                if fd is not None:
                    opened.append((path, fd, os.fstat(fd).st_ino))
            for path, _, ino in opened:
                try:
                    if path.stat().st_ino != ino:
                        return None
                except FileNotFoundError:
                    return None
            index = next(
                (i for i, (_, _, ino) in enumerate(opened) if ino == self.cursor.inode), None
            )
            if index is None:
                return []
            _, old_fd, _ = opened[index]
            parts = [_read_fd(old_fd, self.cursor.offset)]
            for _, fd, ino in opened[index + 1:]:
                if ino == live_ino:
                    break
                parts.append(_read_fd(fd, 0))
            return parts
        finally:
            for _, fd, _ in opened:
                os.close(fd)

    def _poll_events(self) -> list[dict[str, object]]:
        path = events_path(self.log_dir, self.name)
        fd = _open_ro(path)
        if fd is None:
            return []
        try:
            start = self.cursor.events_offset
            if os.fstat(fd).st_size < start:
                start, self._events_tail = 0, b""  # truncated: start over
            data = _read_fd(fd, start)
        finally:
            os.close(fd)
        self.cursor = attrs.evolve(self.cursor, events_offset=start + len(data))
        data = self._events_tail + data
        complete, _, self._events_tail = data.rpartition(b"\n")
        out: list[dict[str, object]] = []
        for raw in complete.splitlines():
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out


async def follow_log(
    log_dir: Path, name: str, cursor: LogCursor, *, interval: float = 0.25
) -> AsyncIterator[str]:
    """Yield new output and event text from ``cursor`` on, polling every ``interval`` s.

    Never ends by itself; cancel it (or stop iterating) to stop.
    """
    follower = LogFollower(Path(log_dir), name, cursor)
    while True:
        text = follower.poll()
        if text:
            yield text
        await trio.sleep(interval)


__all__ = [
    "DEFAULT_KEEP",
    "DEFAULT_MAX_BYTES",
    "LogCursor",
    "LogFollower",
    "LogView",
    "RotatingLog",
    "events_path",
    "follow_log",
    "format_event",
    "log_path",
    "pump_output",
    "read_log",
    "rotated_files",
]

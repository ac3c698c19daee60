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

Time stamps: the pump writes every captured line with the time it was read
in front, ``2026-11-21T07:40:01.123456Z <line>`` (:class:`LineStamper`; UTC,
microseconds, one space), so the readers give every line a time and
interleave output and lifecycle events by time (:class:`LogRecord`). A line
without a stamp (a file written before stamps existed, or the continuation of
a line longer than a log file) takes the time of the line before it. A cell
cannot forge the time of a line: the stamp is put in front of whatever it
writes.
"""

from __future__ import annotations

import calendar
import contextlib
import datetime
import json
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Final, Literal

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
#: The stamp in front of every captured line: ``2026-11-21T07:40:01.123456Z ``.
_STAMP_RE: Final = re.compile(
    rb"(\d{4}-\d\d-\d\dT\d\d:\d\d):(\d\d)\.(\d{6})Z "
)
#: Length of a stamp, the space included.
STAMP_LEN: Final = 28

#: Which fields each lifecycle event shows, in order (others: every extra field).
_EVENT_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "started": ("pid",),
    "ready": ("pid",),
    "exited": ("pid", "code", "signal_name", "reason", "limit", "detail"),
    "destroyed": ("clean",),
    "swap_started": ("from_dna", "to_dna"),
    "swapped": ("outcome", "pid", "from_dna", "to_dna", "from_version", "to_version",
                "serving_ms", "state_bytes"),
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


def stamp(ts: float) -> bytes:
    """The stamp written in front of a line read at Unix time ``ts`` (with its space)."""
    when = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ ").encode()


@attrs.define(eq=False)
class LineStamper:
    """Puts a time stamp in front of every line of a byte stream cut in arbitrary chunks.

    Pure (the time is passed in): a line is stamped with the time of the
    chunk that starts it.
    """

    _at_line_start: bool = True

    def stamp(self, chunk: bytes, ts: float) -> bytes:
        """``chunk`` with ``stamp(ts)`` before each line that starts in it."""
        if not chunk:
            return chunk
        prefix = stamp(ts)
        out = chunk[:-1].replace(b"\n", b"\n" + prefix) + chunk[-1:]
        if self._at_line_start:
            out = prefix + out
        self._at_line_start = chunk.endswith(b"\n")
        return out


async def pump_output(
    fd: int,
    log: RotatingLog,
    *,
    on_line: Callable[[bytes], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> None:
    """Copy a pipe's bytes into ``log``, each line stamped with ``clock()``, until EOF.

    ``fd`` is made non-blocking; it is not closed here (the caller owns it).
    ``on_line`` receives each complete line without its newline (and without
    the stamp), in order, after the chunk holding it is written; a final
    unterminated line is delivered at EOF, and a line longer than
    :data:`MAX_LINE` bytes arrives in pieces of that size.
    """
    os.set_blocking(fd, False)
    pending = bytearray()
    stamper = LineStamper()
    while True:
        await trio.lowlevel.wait_readable(fd)
        try:
            chunk = os.read(fd, READ_SIZE)
        except BlockingIOError:
            continue
        if not chunk:
            break
        log.write(stamper.stamp(chunk, clock()))
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


def _utc(ts: float, fmt: str) -> str:
    try:
        return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime(fmt)
    except (OverflowError, OSError, ValueError):
        return "?"


def _event_ts(event: dict[str, object]) -> float | None:
    ts = event.get("ts")
    if isinstance(ts, (int, float)) and not isinstance(ts, bool):
        return float(ts)
    return None


def format_event(event: dict[str, object]) -> str:
    """One display line: ``[2026-11-21T07:40:01Z] event exited code=1 reason=crash``."""
    ts = _event_ts(event)
    when = "?" if ts is None else _utc(ts, "%Y-%m-%dT%H:%M:%SZ")
    kind = str(event.get("event", "?"))
    keys = _EVENT_FIELDS.get(kind)
    if keys is None:
        keys = tuple(sorted(k for k in event if k not in _EVENT_COMMON))
    parts = [f"{k}={event[k]}" for k in keys if event.get(k) is not None]
    return " ".join([f"[{when}] event {kind}", *parts])


@attrs.frozen(kw_only=True)
class LogRecord:
    """One line of ``cellmesh logs``: captured output or a lifecycle event.

    ``ts`` is the Unix time (None when nothing says: an unstamped line with
    no stamped line before it, an event without ``ts``); ``text`` the output
    line (stamp removed) or the :func:`format_event` line; ``event`` the
    event's fields (None for output).
    """

    ts: float | None
    text: str
    event: dict[str, object] | None = None

    @property
    def stream(self) -> Literal["output", "event"]:
        """``output`` or ``event``."""
        return "output" if self.event is None else "event"

    def display(self, *, timestamps: bool = False) -> str:
        """The line as ``cellmesh logs`` prints it (``-t``: output lines get their time).

        A cell's output is shown with its control characters escaped (``\\x1b``,
        ``\\x0d``): what a cell prints cannot drive the operator's terminal, nor
        pass a carriage return off as the start of a lifecycle event's line.
        """
        text = self.text
        if self.event is None and not text.isprintable():
            text = "".join(
                ch if ch.isprintable() or ch == "\t" else f"\\x{ord(ch):02x}"
                if ord(ch) < 0x100 else f"\\u{ord(ch):04x}" for ch in text
            )
        if timestamps and self.event is None:
            when = "?" if self.ts is None else _utc(self.ts, "%Y-%m-%dT%H:%M:%S.%fZ")
            return f"[{when}] {text}"
        return text

    def to_json(self, cell: str) -> dict[str, object]:
        """The ``logs --json`` object: ts, time (ISO 8601 UTC), cell, stream, text[, event]."""
        doc: dict[str, object] = {
            "ts": self.ts,
            "time": None if self.ts is None else _utc(self.ts, "%Y-%m-%dT%H:%M:%S.%fZ"),
            "cell": cell,
            "stream": self.stream,
            "text": self.text,
        }
        if self.event is not None:
            doc["event"] = self.event
        return doc


@attrs.define(eq=False)
class _StampParser:
    """Splits stamped lines into (time, text); remembers the last time for unstamped ones."""

    last: float | None = None
    _minutes: dict[bytes, int] = attrs.Factory(dict)

    def parse(self, line: bytes) -> tuple[float | None, bytes]:
        m = _STAMP_RE.match(line)
        if m is None:
            return self.last, line
        minute = m.group(1)
        base = self._minutes.get(minute)
        if base is None:
            try:
                parsed = time.strptime(minute.decode(), "%Y-%m-%dT%H:%M")
            except ValueError:
                return self.last, line
            if len(self._minutes) > 4096:
                self._minutes.clear()
            base = self._minutes[minute] = calendar.timegm(parsed)
        self.last = base + int(m.group(2)) + int(m.group(3)) / 1_000_000
        return self.last, line[STAMP_LEN:]

    def records(self, data: bytes) -> list[LogRecord]:
        out: list[LogRecord] = []
        # Lines end at b"\n" only, as the stamper counts them: a cell's b"\r"
        # must not start a line of its own (it would carry a forged stamp).
        for raw in data.removesuffix(b"\n").split(b"\n") if data else ():
            ts, body = self.parse(raw)
            out.append(LogRecord(ts=ts, text=body.decode("utf-8", errors="replace")))
        return out


def _event_record(event: dict[str, object]) -> LogRecord:
    return LogRecord(ts=_event_ts(event), text=format_event(event), event=event)


def merge_by_time(output: list[LogRecord], events: Iterable[LogRecord]) -> list[LogRecord]:
    """Interleave output (kept in file order) with events (sorted by time).

    An event goes before the first output line that is strictly later; an
    event without a time goes last. Output lines without a time never move
    an event.
    """
    def when(e: LogRecord) -> float:
        return float("inf") if e.ts is None else e.ts

    pending = sorted(events, key=when)
    out: list[LogRecord] = []
    ei = 0
    for rec in output:
        if rec.ts is not None:
            while ei < len(pending) and when(pending[ei]) < rec.ts:
                out.append(pending[ei])
                ei += 1
        out.append(rec)
    out.extend(pending[ei:])
    return out


@attrs.frozen(kw_only=True)
class LogCursor:
    """Where a reader stopped: the live file's inode and offset, the events offset."""

    inode: int | None
    offset: int
    events_offset: int


@attrs.frozen(kw_only=True)
class LogView:
    """What :func:`read_log` found: records, whether anything exists, where it ended."""

    records: list[LogRecord]
    found: bool
    cursor: LogCursor

    @property
    def lines(self) -> list[str]:
        """The records as display lines (no output time stamps)."""
        return [r.display() for r in self.records]


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


def read_log(log_dir: Path, name: str, *, lines: int | None = None) -> LogView:
    """The cell's output (rotated files oldest first, then the live file) with its events.

    Returns records: output lines and lifecycle events interleaved by time
    (see the module docstring); only the last ``lines`` of them when given
    (then only the newest files that hold them are read). ``found`` is False
    when the cell has neither a log file nor an events file. The cursor
    points at the end of what was read, for :class:`LogFollower`.
    """
    log_dir = Path(log_dir)
    live = log_path(log_dir, name)
    ev_path = events_path(log_dir, name)
    live_fd = _open_ro(live)  # first: a rotation after this is recognised by inode
    try:
        live_ino = os.fstat(live_fd).st_ino if live_fd is not None else None
        offset = 0
        newest_first: list[bytes] = []
        if live_fd is not None:
            data = _read_fd(live_fd, 0)
            offset = len(data)
            newest_first.append(data)
        have = sum(data.count(b"\n") for data in newest_first)
        for _, path in reversed(rotated_files(log_dir, name)):  # newest first
            if lines is not None and have >= lines:
                break
            fd = _open_ro(path)
            if fd is None:
                continue
            try:
                if os.fstat(fd).st_ino == live_ino:
                    continue  # rotated since we opened the live file: read already
                data = _read_fd(fd, 0)
            finally:
                os.close(fd)
            newest_first.append(data)
            have += data.count(b"\n")
    finally:
        if live_fd is not None:
            os.close(live_fd)
    parser = _StampParser()
    output: list[LogRecord] = []
    for data in reversed(newest_first):
        output.extend(parser.records(data))
    try:
        events_size = ev_path.stat().st_size
        events = [_event_record(e) for e in read_events(ev_path)]
        found_events = True
    except FileNotFoundError:
        events_size, events, found_events = 0, [], False
    records = merge_by_time(output, events)
    if lines is not None:
        records = records[-lines:] if lines > 0 else []
    return LogView(
        records=records,
        found=live_ino is not None or bool(newest_first) or found_events,
        cursor=LogCursor(inode=live_ino, offset=offset, events_offset=events_size),
    )


def logged_cells(log_dir: Path) -> list[str]:
    """The names of the cells that have captured output or events under ``log_dir``."""
    names: set[str] = set()
    try:
        entries = os.listdir(log_dir)
    except OSError:
        return []
    for entry in entries:
        for suffix in (".log", ".events.jsonl"):
            if entry.endswith(suffix):
                names.add(entry[: -len(suffix)])
    return sorted(names)


@attrs.define(eq=False)
class LogFollower:
    """Reads what was appended since a :class:`LogCursor`, across rotations.

    :meth:`poll_records` is one non-blocking step (tests call it directly);
    :func:`follow_log` loops over it. Output is decoded as UTF-8 line by
    line: a line is returned once its newline has arrived (so a character
    or a stamp split across reads is kept whole); events come as records,
    interleaved with the output of the same poll by time.
    """

    log_dir: Path
    name: str
    cursor: LogCursor
    _partial: bytes = attrs.field(default=b"", init=False)
    _parser: _StampParser = attrs.field(factory=_StampParser, init=False)
    _events_tail: bytes = attrs.field(default=b"", init=False)

    def poll_records(self) -> list[LogRecord]:
        """The complete output lines and the events appended since the last poll."""
        data = self._partial + self._poll_output()
        complete, nl, self._partial = data.rpartition(b"\n")
        output = self._parser.records(complete + nl) if nl else []
        events = [_event_record(e) for e in self._poll_events()]
        return merge_by_time(output, events)

    def poll(self, *, timestamps: bool = False) -> str:
        """The new records as display text, one line each ("" when none)."""
        return "".join(r.display(timestamps=timestamps) + "\n" for r in self.poll_records())

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
        for raw in complete.split(b"\n"):
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out


async def follow_log(
    log_dir: Path, name: str, cursor: LogCursor, *, interval: float = 0.25
) -> AsyncIterator[list[LogRecord]]:
    """Yield the new records from ``cursor`` on, polling every ``interval`` s.

    Never ends by itself; cancel it (or stop iterating) to stop.
    """
    follower = LogFollower(Path(log_dir), name, cursor)
    while True:
        records = follower.poll_records()
        if records:
            yield records
        await trio.sleep(interval)


__all__ = [
    "DEFAULT_KEEP",
    "DEFAULT_MAX_BYTES",
    "LogCursor",
    "STAMP_LEN",
    "LineStamper",
    "LogFollower",
    "LogRecord",
    "LogView",
    "RotatingLog",
    "events_path",
    "follow_log",
    "format_event",
    "log_path",
    "logged_cells",
    "merge_by_time",
    "pump_output",
    "read_log",
    "rotated_files",
    "stamp",
]

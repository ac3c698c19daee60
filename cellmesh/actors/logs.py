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
exactly one file, in order (concatenating ``.log.N`` ... ``.log.1``, ``.log``,
each without its leading continuation mark, gives the stream back, minus
what rotated out past ``keep``). A chunk that does not fit is cut just after
its last newline that fits, so lines stay whole across files whenever the
chunk has one; a line longer than the room left (or than ``max_bytes``) is
split across files.

Readers: :func:`read_log` returns the history (rotated files oldest first,
then the live file) merged with the lifecycle events of
:mod:`cellmesh.sandbox._events` (rotated too) as display lines, plus a
:class:`LogCursor` at its end; :class:`LogFollower` continues from a cursor,
following the live files across rotations by inode (the old file is drained
through its new name ``.log.k``, then ``.log.{k-1}`` ... ``.log.1``, then the
new ``.log``; the same for ``.events.jsonl``), so no byte is lost or
repeated unless more than ``keep`` rotations happen between two polls.
:func:`follow_log` is its Trio loop. Both turn the bytes into records with
the same :class:`_LineReader`, so ``logs`` and ``logs -f`` show the same
lines: a line split across files is one line again, and a line longer than
:data:`MAX_LINE` bytes (its stamp included) is shown in pieces of at most
that many bytes, cut at a character boundary, each with the line's time --
so a follower never holds more than :data:`MAX_LINE` bytes of an unfinished
line.

Time stamps: the pump writes every captured line with the time it was read
in front, ``2026-11-21T07:40:01.123456Z <line>`` (:class:`LineStamper`; UTC,
microseconds, one space), so the readers give every line a time and
interleave output and lifecycle events by time (:class:`LogRecord`).

Continuation mark: neither a file nor a line starts with a cell's bytes.
Where :class:`RotatingLog` would start a file (or a line, after a newline
another process of the cell wrote) with the middle of a line, it writes
:data:`CONTINUATION_MARK` (``+``) first, so every line of a file begins with
a stamp or the mark. A reader joins a file that starts with the mark to the
unfinished line the file before it ends with (a file that starts with a
stamp ends such a line); a marked line with nothing to join (its start
rotated out, or two processes' output interleaved) is a line of its own. A
line without a stamp (a marked one, or one of a file written before stamps
existed) takes the time of the line before it. So a cell cannot forge the
time of a line: the stamp is put in front of whatever it writes, and a reader
never takes a cell's bytes for a stamp.
"""

from __future__ import annotations

import calendar
import datetime
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Final, Literal

import attrs
import trio

from ..config import check_cell_name, check_positive_int, ensure_private_dir
from ..sandbox._events import (
    open_readonly,
    parse_events,
    pread_all,
    read_event_history,
    read_since,
    rotate_path,
    rotated_paths,
)

#: Default size of one log file before it rotates.
DEFAULT_MAX_BYTES: Final = 10 * 1024 * 1024
#: Default number of rotated files kept besides the live one.
DEFAULT_KEEP: Final = 5
#: The pump reads at most this much per wake-up.
READ_SIZE: Final = 65536
#: ``on_line`` receives lines at most this long (longer ones arrive in pieces).
MAX_LINE: Final = 65536

#: Starts a file, or a line, that continues a line of the cell's stream (never a stamp).
CONTINUATION_MARK: Final = b"+"
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
    return rotated_paths(log_path(log_dir, name))


# ---------------------------------------------------------------- writing


@attrs.define(eq=False)
class RotatingLog:
    """Synchronous appender of one cell's captured output, rotating by size.

    Files are created 0600 in a 0700 directory. :meth:`write` never raises
    ``OSError``: a failed write (disk full) counts its bytes in
    :attr:`dropped_bytes`, keeps the error in :attr:`last_error` and reopens
    the file on the next write, so a pump never stops draining the cell's pipe.
    Wherever a file would get the middle of a line at a line start (a fresh
    file, or after a newline another writer put there) the
    :data:`CONTINUATION_MARK` goes first.
    """

    log_dir: Path
    name: str
    max_bytes: int = DEFAULT_MAX_BYTES
    keep: int = DEFAULT_KEEP
    dropped_bytes: int = attrs.field(default=0, init=False)
    last_error: OSError | None = attrs.field(default=None, init=False)
    _fd: int | None = attrs.field(default=None, init=False)
    _size: int = attrs.field(default=0, init=False)
    #: The live file is empty or ends with a newline.
    _file_at_line_start: bool = attrs.field(default=True, init=False)
    #: The last byte given to :meth:`write` was not a newline.
    _stream_mid_line: bool = attrs.field(default=False, init=False)

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
                self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            try:
                st = os.fstat(fd)
                if st.st_mode & 0o077:
                    os.fchmod(fd, 0o600)
                at_line_start = st.st_size == 0 or os.pread(fd, 1, st.st_size - 1) == b"\n"
            except OSError:
                os.close(fd)
                raise
            self._fd = fd
            self._size = st.st_size
            self._file_at_line_start = at_line_start
        return self._fd

    def _write_all(self, fd: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
            self._size += n
        if data:
            self._file_at_line_start = bytes(data[-1:]) == b"\n"

    def write(self, data: bytes, *, continues: bool | None = None) -> None:
        """Append ``data``, rotating first wherever it would exceed ``max_bytes``.

        ``continues`` says whether ``data`` starts in the middle of a line of
        its writer's stream (the pump knows; by default: whether the data of
        the previous call did not end with a newline).
        """
        if continues is None:
            continues = self._stream_mid_line
        if data:
            self._stream_mid_line = data[-1] != 0x0A
        view = memoryview(data)
        pos = 0
        try:
            while pos < len(data):
                fd = self._open()
                mid_line = continues if pos == 0 else data[pos - 1] != 0x0A
                mark = CONTINUATION_MARK if mid_line and self._file_at_line_start else b""
                room = self.max_bytes - self._size - len(mark)
                cut = len(data) - pos
                if cut > room:
                    nl = data.rfind(b"\n", pos, pos + room) if room > 0 else -1
                    cut = nl + 1 - pos if nl >= 0 else 0
                    if cut == 0 and self._size > 0:
                        self.rotate()  # start the chunk in a fresh file
                        continue
                    if cut == 0:
                        cut = max(room, 1)  # a line longer than max_bytes: split it
                if mark:
                    self._write_all(fd, mark + data[pos:pos + cut])
                else:
                    self._write_all(fd, view[pos:pos + cut])
                pos += cut
                if pos < len(data):
                    self.rotate()
        except OSError as exc:
            self.dropped_bytes += len(data) - pos
            self.last_error = exc
            self._close_fd()

    def rotate(self) -> None:
        """Close the live file and shift it to ``.log.1`` (``.log.{keep}`` is replaced)."""
        self._close_fd()
        rotate_path(self.path, self.keep)
        self._size = 0
        self._file_at_line_start = True

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

    @property
    def at_line_start(self) -> bool:
        """Whether the next chunk starts a line (the last one ended with a newline)."""
        return self._at_line_start

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
        continues = not stamper.at_line_start
        log.write(stamper.stamp(chunk, clock()), continues=continues)
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
    parts = [f"{escaped(k)}={escaped(str(event[k]))}" for k in keys if event.get(k) is not None]
    return " ".join([f"[{when}] event {escaped(kind)}", *parts])


def escaped(text: str) -> str:
    """``text`` with every unprintable character but a tab escaped (``\\x1b``,
    ``\\u2028``, ``\\U000e0041``): nothing a cell wrote (its output, the cause
    of a failed swap it raised) can drive the operator's terminal."""
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() or ch == "\t"
        else f"\\x{ord(ch):02x}" if ord(ch) < 0x100
        else f"\\u{ord(ch):04x}" if ord(ch) < 0x10000
        else f"\\U{ord(ch):08x}"
        for ch in text
    )


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
        text = self.text if self.event is not None else escaped(self.text)  # events: escaped
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


def _piece_end(line: bytes, start: int) -> int:
    """Where the piece of ``line`` from ``start`` ends (more than :data:`MAX_LINE` bytes follow).

    At most :data:`MAX_LINE` bytes, cut before a UTF-8 character rather than
    inside one (a function of the bytes alone: every reader cuts the same).
    """
    end = start + MAX_LINE
    while end > start + MAX_LINE - 3 and line[end] & 0xC0 == 0x80:
        end -= 1
    return end


@attrs.define(eq=False)
class _StampParser:
    """Splits stamped lines into (time, text); remembers the last time for unstamped ones."""

    last: float | None = None
    _minutes: dict[bytes, int] = attrs.Factory(dict)

    def parse(self, line: bytes) -> tuple[float | None, bytes]:
        """The time and text of a line that starts a line (a stamp, the mark, or neither)."""
        if line.startswith(CONTINUATION_MARK):
            return self.last, line[len(CONTINUATION_MARK):]
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

    def record(self, raw: bytes, *, continued: bool) -> LogRecord:
        """One record; ``continued``: ``raw`` is the middle of a line (never parsed for a stamp)."""
        ts, body = (self.last, raw) if continued else self.parse(raw)
        return LogRecord(ts=ts, text=body.decode("utf-8", errors="replace"))

    def pieces(self, raw: bytes, *, continued: bool = False) -> list[LogRecord]:
        """The records of one line: pieces of at most :data:`MAX_LINE` bytes."""
        out: list[LogRecord] = []
        start = 0
        while len(raw) - start > MAX_LINE:
            end = _piece_end(raw, start)
            out.append(self.record(raw[start:end], continued=continued or start > 0))
            start = end
        out.append(self.record(raw[start:], continued=continued or start > 0))
        return out

    def records(self, data: bytes, *, continued: bool = False) -> list[LogRecord]:
        """The records of the lines of ``data`` (``continued``: its first line is a middle)."""
        out: list[LogRecord] = []
        # Lines end at b"\n" only, as the stamper counts them: a cell's b"\r"
        # must not start a line of its own (it would carry a forged stamp).
        for raw in data.removesuffix(b"\n").split(b"\n") if data else ():
            out.extend(self.pieces(raw, continued=continued))
            continued = False
        return out


@attrs.define(eq=False)
class _LineReader:
    """Turns the bytes of a cell's log files, in file order, into records.

    :func:`read_log` and :class:`LogFollower` both use it, so they cut the
    same lines and pieces. :meth:`feed` takes bytes as they are read
    (``file_start``: they begin a file); a line is returned once its newline
    arrives, except that more than :data:`MAX_LINE` buffered bytes are
    returned as pieces, so at most that many stay buffered.
    """

    parser: _StampParser = attrs.Factory(_StampParser)
    #: The buffered bytes (when none: the next ones) are the middle of a line.
    continued: bool = False
    _partial: bytes = b""

    @property
    def mid_line(self) -> bool:
        """The next byte continues a line (a file start without the mark ends it)."""
        return bool(self._partial) or self.continued

    @property
    def buffered(self) -> int:
        """Bytes held of the unfinished line (at most :data:`MAX_LINE`)."""
        return len(self._partial)

    def feed(self, data: bytes, *, file_start: bool = False) -> list[LogRecord]:
        """The records completed by ``data``."""
        out: list[LogRecord] = []
        if file_start and data and self.mid_line:
            if data.startswith(CONTINUATION_MARK):
                data = data[len(CONTINUATION_MARK):]  # the line goes on in this file
            else:
                out.extend(self.end_line())  # a stamp: the line before it ended there
        buf = self._partial + data if self._partial else data
        start = buf.rfind(b"\n") + 1
        if start:
            out.extend(self.parser.records(buf[:start], continued=self.continued))
            self.continued = False
        while len(buf) - start > MAX_LINE:
            end = _piece_end(buf, start)
            out.append(self.parser.record(buf[start:end], continued=self.continued))
            start, self.continued = end, True
        self._partial = buf[start:]
        return out

    def end_line(self) -> list[LogRecord]:
        """The buffered rest of the line as a record (none when empty); a line starts next."""
        out = self.parser.pieces(self._partial, continued=self.continued) if self._partial else []
        self._partial, self.continued = b"", False
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
    """Where a reader stopped.

    The live output file's inode and offset, the live events file's inode
    and offset; whether the output stopped in the middle of a line (the next
    bytes continue it: never parsed for a stamp) and the time of its last line.
    """

    inode: int | None
    offset: int
    events_offset: int
    events_inode: int | None = None
    mid_line: bool = False
    last_ts: float | None = None


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


def read_log(log_dir: Path, name: str, *, lines: int | None = None) -> LogView:
    """The cell's output (rotated files oldest first, then the live file) with its events.

    Returns records: output lines and lifecycle events interleaved by time
    (see the module docstring); only the last ``lines`` of them when given
    (then only the newest output files that hold them are read, back to one
    that starts a line; the events files are bounded by their rotation).
    ``found`` is False when the cell has neither a log file nor an events
    file. The cursor points at the end of what was read, for
    :class:`LogFollower`.
    """
    log_dir = Path(log_dir)
    live = log_path(log_dir, name)
    ev_path = events_path(log_dir, name)
    live_fd = open_readonly(live)  # first: a rotation after this is recognised by inode
    try:
        live_ino = os.fstat(live_fd).st_ino if live_fd is not None else None
        offset = 0
        newest_first: list[bytes] = []
        if live_fd is not None:
            data = pread_all(live_fd, 0)
            offset = len(data)
            newest_first.append(data)
        have = sum(data.count(b"\n") for data in newest_first)
        for _, path in reversed(rotated_files(log_dir, name)):  # newest first
            if lines is not None and have >= lines and not (
                newest_first and newest_first[-1].startswith(CONTINUATION_MARK)
            ):
                break
            fd = open_readonly(path)
            if fd is None:
                continue
            try:
                if os.fstat(fd).st_ino == live_ino:
                    continue  # rotated since we opened the live file: read already
                data = pread_all(fd, 0)
            finally:
                os.close(fd)
            newest_first.append(data)
            have += data.count(b"\n")
    finally:
        if live_fd is not None:
            os.close(live_fd)
    reader = _LineReader()
    output: list[LogRecord] = []
    for data in reversed(newest_first):
        output.extend(reader.feed(data, file_start=True))
    mid_line = reader.mid_line
    output.extend(reader.end_line())
    history = read_event_history(ev_path)
    records = merge_by_time(output, map(_event_record, history.events))
    if lines is not None:
        records = records[-lines:] if lines > 0 else []
    return LogView(
        records=records,
        found=live_ino is not None or bool(newest_first) or history.found,
        cursor=LogCursor(
            inode=live_ino, offset=offset, events_inode=history.inode,
            events_offset=history.end, mid_line=mid_line, last_ts=reader.parser.last,
        ),
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
    or a stamp split across reads is kept whole), or in pieces of
    :data:`MAX_LINE` bytes as they arrive (as :func:`read_log` cuts them);
    events come as records, interleaved with the output of the same poll by
    time.
    """

    log_dir: Path
    name: str
    cursor: LogCursor
    _reader: _LineReader = attrs.field(init=False)
    _events_tail: bytes = attrs.field(default=b"", init=False)

    def __attrs_post_init__(self) -> None:
        self._reader = _LineReader(
            _StampParser(last=self.cursor.last_ts), continued=self.cursor.mid_line
        )

    @property
    def buffered(self) -> int:
        """Bytes held of an unfinished output line (at most :data:`MAX_LINE`)."""
        return self._reader.buffered

    def poll_records(self) -> list[LogRecord]:
        """The output lines (or pieces) and the events appended since the last poll."""
        got = read_since(log_path(self.log_dir, self.name), self.cursor.inode, self.cursor.offset)
        self.cursor = attrs.evolve(self.cursor, inode=got.inode, offset=got.offset)
        output = self._reader.end_line() if got.skipped else []
        for start, data in got.parts:
            output.extend(self._reader.feed(data, file_start=start == 0))
        events = [_event_record(e) for e in self._poll_events()]
        return merge_by_time(output, events)

    def poll(self, *, timestamps: bool = False) -> str:
        """The new records as display text, one line each ("" when none)."""
        return "".join(r.display(timestamps=timestamps) + "\n" for r in self.poll_records())

    def _poll_events(self) -> list[dict[str, object]]:
        got = read_since(
            events_path(self.log_dir, self.name),
            self.cursor.events_inode, self.cursor.events_offset,
        )
        self.cursor = attrs.evolve(self.cursor, events_inode=got.inode, events_offset=got.offset)
        if got.skipped:
            self._events_tail = b""
        out: list[dict[str, object]] = []
        for i, (_, data) in enumerate(got.parts):
            complete, _, tail = (self._events_tail + data).rpartition(b"\n")
            out.extend(parse_events(complete))
            # a rotated file is complete: a torn line at its end stays torn
            self._events_tail = tail if i == len(got.parts) - 1 else b""
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
    "CONTINUATION_MARK",
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

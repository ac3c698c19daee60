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
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol

import attrs

from ..config import Paths, check_cell_name

EventKind = Literal[
    "started", "exited", "destroyed",
    # the root: a started process reported ready (it serves; a standby never does)
    "ready",
    # hot swaps (written by the root: docs/swap.md)
    "swap_started", "swapped", "swap_rolled_back", "swap_failed",
]


class EventSink(Protocol):
    """Receives lifecycle events; must not raise for I/O trouble it can report."""

    def emit(self, cell: str, event: EventKind, fields: dict[str, object]) -> None:
        """Record one event of ``cell``."""
        ...


@attrs.define(eq=False)
class JsonlEventLog:
    """Append events as JSON lines to ``<log_dir>/<cell>.events.jsonl`` or one ``path``."""

    log_dir: Path | None = None
    path: Path | None = None
    _clock: Callable[[], float] = time.time
    #: Events that could not be written (disk full, permissions), and the last error.
    dropped: int = attrs.field(default=0, init=False)
    last_error: OSError | None = attrs.field(default=None, init=False)

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

        An I/O failure never propagates into the lifecycle operation that
        emitted the event: it is counted in :attr:`dropped` and kept in
        :attr:`last_error`.
        """
        target = self.file_for(cell)
        record = {"ts": self._clock(), "event": event, "cell": cell, **fields}
        line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
        try:
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, line)
            finally:
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


def read_events(path: Path) -> list[dict[str, object]]:
    """Parse an events file; a torn last line (crash mid-write) is skipped."""
    out: list[dict[str, object]] = []
    try:
        text = path.read_text()
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


__all__ = ["EventKind", "EventSink", "JsonlEventLog", "MemoryEventLog", "read_events"]

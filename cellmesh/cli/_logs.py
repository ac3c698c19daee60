"""``cellmesh logs``: a cell's captured output and lifecycle events, by time.

Reads ``$CELL_HOME/logs`` directly (no root needed). A replica ``X/i`` of a
replicated cell has its logs filed as ``X..i``; every name this module
prints is the one ``logs`` takes (``X/i``), never a file name.
"""

from __future__ import annotations

import contextlib
import difflib
import json as jsonlib
import sys
from pathlib import Path
from typing import TextIO

import trio

from ..actors.logs import LogCursor, LogRecord, follow_log, logged_cells, read_log
from ..actors.membership import parse_replica_name, replica_stem
from ..config import Paths, check_cell_name
from ..errors import CellmeshError, ConfigError


def log_name(name: str) -> str:
    """The file name of ``NAME``'s logs: the cell's name, or ``X..i`` for replica ``X/i``.

    Raises :class:`~cellmesh.errors.ConfigError` (source ``NAME``) when it is neither.
    """
    replica = parse_replica_name(name)
    if replica is not None:
        check_cell_name(replica[0], source="NAME")
        return replica_stem(*replica)
    check_cell_name(name, source="NAME")
    return name


def cell_of_stem(stem: str) -> str:
    """The name ``logs`` takes for the file name ``stem``: ``X/i`` for a replica's ``X..i``."""
    group, sep, replica = stem.partition("..")
    return f"{group}/{replica}" if sep else stem


def run_logs(
    name: str,
    *,
    follow: bool,
    lines: int | None,
    json: bool = False,
    timestamps: bool = False,
    out: TextIO | None = None,
) -> int:
    """Implementation of ``cellmesh logs``."""
    out = out if out is not None else sys.stdout
    stem = log_name(name)
    if lines is not None and lines < 0:
        raise ConfigError("--lines", f"must be >= 0, got {lines}")
    log_dir = Paths.from_env().log_dir
    view = read_log(log_dir, stem, lines=lines)
    if not view.found:
        raise NoCellLogs(name, log_dir, logged_cells(log_dir))
    _write_records(out, name, view.records, json=json, timestamps=timestamps)
    if not follow:
        return 0
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends following
        trio.run(_follow, log_dir, (stem, name), view.cursor, out, (json, timestamps))
    return 0


def _write_records(
    out: TextIO, name: str, records: list[LogRecord], *, json: bool, timestamps: bool
) -> None:
    for record in records:
        if json:
            out.write(jsonlib.dumps(record.to_json(name), sort_keys=True) + "\n")
        else:
            out.write(record.display(timestamps=timestamps) + "\n")
    out.flush()


async def _follow(
    log_dir: Path, names: tuple[str, str], cursor: LogCursor, out: TextIO,
    style: tuple[bool, bool],
) -> None:
    """Follow the logs filed as ``names[0]`` (a replica's stem) shown as ``names[1]``."""
    stem, name = names
    json, timestamps = style
    async for records in follow_log(log_dir, stem, cursor):
        _write_records(out, name, records, json=json, timestamps=timestamps)


class NoCellLogs(CellmeshError):
    """Cell ``name`` has neither captured output nor lifecycle events under ``log_dir``.

    ``known`` lists the cells that have logs there (their file names: ``X..i``
    for replica ``X/i``); the message suggests the nearest name and lists them
    as ``logs`` takes them (``X/i``).
    """

    def __init__(self, name: str, log_dir: Path, known: list[str]) -> None:
        shown_names = [cell_of_stem(k) for k in known]
        replicas = sorted(n for k, n in zip(known, shown_names, strict=True)
                          if k.startswith(f"{name}.."))
        if replicas:
            super().__init__(
                f"no logs for cell {name!r}: it is a replicated cell, name one replica "
                f"({', '.join(replicas)})"
            )
            self.name = name
            self.log_dir = log_dir
            self.known = known
            return
        near = difflib.get_close_matches(name, shown_names, n=1, cutoff=0.6)
        hint = f"did you mean {near[0]!r}? " if near else ""
        listed = ", ".join(shown_names[:20]) + (", ..." if len(known) > 20 else "")
        cells = f"cells with logs: {listed}" if known else f"nothing in {log_dir}"
        super().__init__(f"no logs for cell {name!r} ({hint}{cells})")
        self.name = name
        self.log_dir = log_dir
        self.known = known


__all__ = ["NoCellLogs", "cell_of_stem", "log_name", "run_logs"]

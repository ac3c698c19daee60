"""Why a cell process ended: the records a cell runtime writes on its report pipe.

Theory of operation
-------------------
The root gives every cell process a pipe (``CELL_REPORT_FD``, write end in
the cell). The runtime writes at most two records on it, each one JSON
object on one line:

* ``{"event": "loaded"}`` once the cell's class is imported (a standby
  writes it before waiting for "go"): ``cellmesh up`` waits for this record
  from every cell before it starts the mesh, so a cell whose code does not
  import fails ``up``, on-demand cells included;
* ``{"event": "failed", "stage": ..., "type": ..., "message": ...,
  "source": ...}`` just before the runtime exits because of a failure:
  ``stage`` is ``config`` (a bad runtime contract: ``source`` names the
  variable, e.g. ``CELL_ENTRY``), ``import`` (importing the cell's module
  raised), ``construct`` (the class's constructor raised), ``start``
  (``on_start`` raised), ``setup`` (the runtime's own start-up steps failed:
  the umbilical, a replica's log, the membrane) or ``run`` (a crash after the
  cell was serving).

A standby writes ``loaded`` (or its import failure) after preloading the
code its go pipe named, and every process writes it again once it loaded
the code it runs (after a hot swap's switch, other code): a ``loaded``
record clears a failure written before it.

The root reads the pipe when the process has exited (whatever it wrote is
in the pipe by then) and adds the failure to the exit's description, so
``CellDown``, ``cellmesh status`` and the restart log say
``exit code 1: ValueError in on_start: boom`` rather than ``exit code 1``.

Cells are untrusted: a cell may write anything on its pipe. The root reads
at most :data:`MAX_REPORT_BYTES`, :func:`parse_reports` never raises (a
garbled or foreign line is skipped; the last ``failed`` record wins), and
every text is cut to a bounded length with control characters replaced, so
what a cell reports about itself can neither grow the root's memory nor
reach an operator's terminal as escape sequences. It only ever describes
that cell's own exit.

Pure: no I/O; the runtime and the root do the reading and writing.
"""

from __future__ import annotations

import json
from typing import Final, Literal

import attrs

#: The environment variable holding the report pipe's fd in the cell.
REPORT_FD_ENV: Final = "CELL_REPORT_FD"
#: The root reads at most this much of a process's report pipe.
MAX_REPORT_BYTES: Final = 65536
#: Longest exception type name kept.
MAX_TYPE: Final = 200
#: Longest message kept.
MAX_MESSAGE: Final = 1000

Stage = Literal["config", "import", "construct", "start", "setup", "run"]
_STAGES: Final[frozenset[str]] = frozenset(
    {"config", "import", "construct", "start", "setup", "run"}
)
#: Runtime contract variables and the manifest key each one comes from.
_SOURCE_KEYS: Final = {"CELL_ENTRY": "entry", "CELL_DNA_DIR": "dna"}


def keyed(key: str, type_name: str, message: str) -> tuple[str, str]:
    """A reported ``ConfigError`` about a variable the manifest sets (``CELL_ENTRY: ...``)
    as the manifest key it comes from (``("", "cells.x.entry: ...")``); else unchanged.

    For a swap's new process, whose report names the exception and message only.
    """
    if type_name == "ConfigError":
        var, sep, rest = message.partition(": ")
        field = _SOURCE_KEYS.get(var)
        if sep and field:
            return "", f"{key}.{field}: {rest}"
    return type_name, message


#: A cell's ``version`` as the root keeps and shows it: cut to this many characters.
MAX_VERSION_TEXT = 100


def version_text(version: object) -> str:
    """A cell's ``version`` as it reported it, made safe to keep and print (a cell is
    untrusted: no control characters, at most :data:`MAX_VERSION_TEXT` characters)."""
    return clean(version, MAX_VERSION_TEXT)


def printable(text: str, *, keep: str = "") -> str:
    """``text`` with every unprintable character (but those in ``keep``) shown as ``?``."""
    return "".join(ch if ch.isprintable() or ch in keep else "?" for ch in text)


def clean(text: object, limit: int, *, keep_newlines: bool = False) -> str:
    """``text`` as a printable one-liner of at most ``limit`` characters
    (``keep_newlines``: printable lines, so a traceback stays readable)."""
    raw = text if isinstance(text, str) else ""
    out = printable(raw[: limit + 1], keep="\n" if keep_newlines else "")
    return out if len(out) <= limit else out[: limit - 3] + "..."


@attrs.frozen(kw_only=True)
class Failure:
    """A failure a cell reported before it exited (see the module doc)."""

    stage: Stage
    type_name: str
    message: str
    #: The runtime contract variable a ``config`` failure is about, if any.
    source: str | None = None

    def describe(self, key: str) -> str:
        """The failure for an operator; ``key`` is the cell's manifest table (``cells.x``).

        ``cells.x.entry: module 'kv.nosuch' not found ...``,
        ``cells.x: CELL_REPLICA_ID: is not set, but ...`` (another variable),
        ``cells.x.entry: importing the cell's code raised ImportError: ...``,
        ``ValueError in on_start: boom``, ``KeyError: 'k'``.
        """
        if self.stage == "config":
            field = _SOURCE_KEYS.get(self.source or "")
            if field:
                return f"{key}.{field}: {self.message}"
            if self.source:  # the message reads after its variable: "is not set: ..."
                return f"{key}: {self.source}: {self.message}"
            return f"{key}: {self.message}"
        error = f"{self.type_name}: {self.message}" if self.message else self.type_name
        if self.stage == "import":
            return f"{key}.entry: importing the cell's code raised {error}"
        if self.stage in ("construct", "start", "setup"):
            where = {
                "construct": f"{self.type_name} in the constructor",
                "start": f"{self.type_name} in on_start",
                "setup": f"{self.type_name} while starting",
            }[self.stage]
            return f"{where}: {self.message}" if self.message else where
        return error


@attrs.frozen(kw_only=True)
class Reports:
    """What one process wrote on its report pipe."""

    loaded: bool = False
    failure: Failure | None = None


def loaded_record() -> bytes:
    """The record a runtime writes once the cell's class is imported."""
    return b'{"event":"loaded"}\n'


def failure_record(
    stage: Stage, type_name: str, message: str, *, source: str | None = None
) -> bytes:
    """The record a runtime writes just before it exits because of a failure."""
    doc = {
        "event": "failed", "stage": stage, "type": clean(type_name, MAX_TYPE),
        "message": clean(message, MAX_MESSAGE), "source": source,
    }
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


def parse_reports(data: bytes) -> Reports:
    """The records in ``data`` (at most :data:`MAX_REPORT_BYTES` are looked at).

    Never raises: a line that is not a record is skipped; the last
    ``failed`` record wins, unless a ``loaded`` record follows it (a standby
    that failed to preload one version of the code may load another on
    a swap's ``s TOKEN DIGEST``: the old failure no longer describes it); an
    unterminated last line is ignored.
    """
    loaded = False
    failure: Failure | None = None
    complete = data[:MAX_REPORT_BYTES].rpartition(b"\n")[0]
    for line in complete.split(b"\n"):
        try:
            doc = json.loads(line)
        except (ValueError, UnicodeDecodeError, RecursionError):
            continue
        if not isinstance(doc, dict):
            continue
        event = doc.get("event")
        if event == "loaded":
            loaded = True
            failure = None  # the process got past an earlier failure (new code)
        elif event == "failed":
            stage = doc.get("stage")
            source = doc.get("source")
            failure = Failure(
                stage=stage if stage in _STAGES else "run",
                type_name=clean(doc.get("type"), MAX_TYPE) or "?",
                message=clean(doc.get("message"), MAX_MESSAGE),
                source=clean(source, MAX_TYPE) if isinstance(source, str) else None,
            )
    return Reports(loaded=loaded, failure=failure)


__all__ = [
    "MAX_MESSAGE",
    "MAX_REPORT_BYTES",
    "MAX_TYPE",
    "MAX_VERSION_TEXT",
    "REPORT_FD_ENV",
    "Failure",
    "Reports",
    "Stage",
    "clean",
    "failure_record",
    "keyed",
    "loaded_record",
    "parse_reports",
    "version_text",
]

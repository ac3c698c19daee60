"""The root's own log lines: to stderr (``root.log`` when ``cellmesh up`` started it).

A line that cannot be written (the disk holding ``root.log`` is full, an I/O
error) is dropped and counted, never raised: the root logs from every part of
itself, its failure guard included, so an exception here would stop the root
and with it every cell. A full disk loses log lines, not the mesh. Once a
line can be written again, one line first says how many were lost.
"""

from __future__ import annotations

import sys
from typing import TextIO

__all__ = ["StderrLog"]


class StderrLog:
    """Write root log lines to ``stream`` (default: ``sys.stderr`` at each call)."""

    __slots__ = ("dropped", "error", "stream")

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.dropped = 0  # lines lost since the last line written
        self.error = ""  # why the first of them was lost

    def __call__(self, text: str) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        try:
            if self.dropped:
                stream.write(f"cellmesh: root: {self.dropped} log line(s) lost: "
                             f"could not write them ({self.error})\n")
            stream.write(text + "\n")
            stream.flush()
        except (OSError, ValueError) as exc:  # (ValueError: the stream is closed)
            if not self.dropped:
                self.error = str(exc)
            self.dropped += 1
            return
        self.dropped = 0
        self.error = ""

"""The root's log lines: one that cannot be written is counted, never raised."""

from __future__ import annotations

import errno
import io

from cellmesh.actors._rootlog import StderrLog


class FlakyStream(io.StringIO):
    """A stream whose writes fail with ENOSPC while ``full``."""

    full = False

    def write(self, text: str) -> int:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(text)


def test_lines_that_cannot_be_written_are_counted_then_reported_once() -> None:
    stream = FlakyStream()
    log = StderrLog(stream)
    log("root: up")
    stream.full = True
    for i in range(3):
        log(f"root: line {i}")  # does not raise
    assert log.dropped == 3
    stream.full = False
    log("root: back")
    log("root: again")
    assert stream.getvalue().splitlines() == [
        "root: up",
        "cellmesh: root: 3 log line(s) lost: could not write them "
        "([Errno 28] No space left on device)",
        "root: back",
        "root: again",
    ]
    assert log.dropped == 0


def test_a_closed_stream_loses_lines_without_raising() -> None:
    stream = io.StringIO()
    log = StderrLog(stream)
    stream.close()
    log("root: stopped")
    assert log.dropped == 1

"""The root's end of a cell process's report pipe (the records: :mod:`.exitcause`).

One :class:`ReportPipe` per spawned process, owned by its slot (keyed by the
backend id the process runs under) and closed when a later process on the
same id replaces it or when the slot goes. Reads are bounded by
:data:`~cellmesh.actors.exitcause.MAX_REPORT_BYTES`: what a cell writes past
that is never read (the cell's own writes then fail, or block the cell, not
the root).
"""

from __future__ import annotations

import contextlib
import os

import attrs
import trio

from .exitcause import MAX_REPORT_BYTES, Reports, parse_reports


@attrs.define(eq=False)
class ReportPipe:
    """The read end of one process's report pipe and what has been read from it."""

    fd: int
    _data: bytearray = attrs.Factory(bytearray)
    _eof: bool = False

    def __attrs_post_init__(self) -> None:
        os.set_blocking(self.fd, False)

    def _read_available(self) -> None:
        """Read what the pipe holds now (non-blocking), up to the byte bound."""
        while not self._eof and self.fd >= 0 and len(self._data) < MAX_REPORT_BYTES:
            try:
                chunk = os.read(self.fd, MAX_REPORT_BYTES - len(self._data))
            except BlockingIOError:
                return
            except OSError:
                self._eof = True
                return
            if not chunk:
                self._eof = True
                return
            self._data += chunk

    def reports_nowait(self) -> Reports:
        """The records written so far (for an exited process: all of them)."""
        self._read_available()
        return parse_reports(bytes(self._data))

    async def wait_loaded(self) -> Reports:
        """Wait until the process reports ``loaded`` or a failure, or closes the pipe."""
        while True:
            reports = self.reports_nowait()
            if reports.loaded or reports.failure is not None or self._eof or self.fd < 0:
                return reports
            if len(self._data) >= MAX_REPORT_BYTES:
                return reports  # it filled its pipe with something else: nothing to wait for
            try:
                await trio.lowlevel.wait_readable(self.fd)
            except trio.ClosedResourceError:
                return reports

    def close(self) -> None:
        """Close the read end (idempotent)."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            # A waiting task gets ClosedResourceError (outside a Trio run nobody waits).
            with contextlib.suppress(RuntimeError):
                trio.lowlevel.notify_closing(fd)
            os.close(fd)


__all__ = ["ReportPipe"]

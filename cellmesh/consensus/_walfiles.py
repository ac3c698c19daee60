"""The write-ahead log's file layer: errors, durability, names, locking, snapshot files.

Theory of operation: everything :class:`~cellmesh.consensus.wal.WriteAheadLog`
and the ``STATE`` file (:mod:`cellmesh.consensus._walstate`) do to the
directory goes through these helpers, so each durability rule is written
once: a file that is created, renamed or removed is followed by an fsync of
the directory; a snapshot file is written to a temporary name, fsynced and
renamed; a write is one ``pwrite`` loop. The errors are re-exported by
:mod:`cellmesh.consensus.wal`.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import re
from pathlib import Path
from typing import Final, Protocol

import attrs

from cellmesh.consensus import _walcodec as codec
from cellmesh.consensus.types import Snapshot, SnapshotMeta
from cellmesh.errors import CellmeshError

SEGMENT_RE: Final = re.compile(r"wal-([0-9a-f]{16})-([0-9a-f]{16})\.log")
SNAPSHOT_RE: Final = re.compile(r"snap-([0-9a-f]{16})-([0-9a-f]{16})\.snap")
TMP_SUFFIX: Final = ".tmp"
LOCK_NAME: Final = "LOCK"
FILE_MODE: Final = 0o600


# --------------------------------------------------------------------------
# Errors


class WalError(CellmeshError):
    """Root of the write-ahead log's errors."""


class WalCorrupted(WalError):
    """The files on disk are damaged in a way recovery must not paper over.

    ``path`` names the file and ``offset`` the byte where the damage starts;
    ``reason`` says what is wrong. The operator must investigate (restore the
    node from a peer); the log is never truncated to get past this.
    """

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(f"{path}: corrupt at byte {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class WalFailed(WalError):
    """An I/O call failed; the log is stopped and every later call raises this.

    The original ``OSError`` is the ``__cause__`` of the first ``WalFailed``
    and is kept in ``os_error``. Do not retry: stop the node and recover.
    """

    def __init__(self, os_error: BaseException) -> None:
        super().__init__(f"write-ahead log stopped after an I/O failure: {os_error}")
        self.os_error = os_error


class WalMisuse(WalError, ValueError):
    """The caller broke the log's contract (a local bug): non-contiguous entries,
    an older snapshot, a closed log."""


class WalLocked(WalError):
    """Another open :class:`WriteAheadLog` (in this or another process) holds the directory."""

    def __init__(self, directory: Path) -> None:
        super().__init__(f"{directory} is in use by another write-ahead log")
        self.directory = directory


# --------------------------------------------------------------------------
# Injectable durability


class Syncer(Protocol):
    """How the log makes bytes durable. Injected so tests can count or fail syncs."""

    def sync_data(self, fd: int) -> None:
        """``fdatasync`` a segment after a batch was written (one per batch)."""

    def sync_file(self, fd: int) -> None:
        """``fsync`` a whole file (a new snapshot, a truncated torn tail)."""

    def sync_dir(self, fd: int) -> None:
        """``fsync`` a directory after a file in it was created, renamed or removed."""


@attrs.frozen
class OsSyncer:
    """The real thing: ``os.fdatasync`` / ``os.fsync``."""

    def sync_data(self, fd: int) -> None:
        """``os.fdatasync(fd)``."""
        os.fdatasync(fd)

    def sync_file(self, fd: int) -> None:
        """``os.fsync(fd)``."""
        os.fsync(fd)

    def sync_dir(self, fd: int) -> None:
        """``os.fsync(fd)`` on a directory descriptor."""
        os.fsync(fd)


# --------------------------------------------------------------------------
# File helpers


def write_all(fd: int, data: bytes, offset: int) -> None:
    """``pwrite`` all of ``data`` at ``offset`` (one call unless the kernel writes short)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(f"pwrite wrote {written} bytes")
        view = view[written:]
        offset += written


def sync_dir(directory: Path, syncer: Syncer) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        syncer.sync_dir(fd)
    finally:
        os.close(fd)


def make_dir(path: Path, syncer: Syncer) -> None:
    if path.is_dir():
        return
    path.mkdir(parents=True, mode=0o700)
    sync_dir(path.parent, syncer)


def lock_directory(path: Path) -> int:
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise WalLocked(path) from None
    return fd


def remove_temporaries(path: Path, syncer: Syncer) -> None:
    removed = False
    for name in os.listdir(path):
        if name.endswith(TMP_SUFFIX) and SNAPSHOT_RE.fullmatch(name[: -len(TMP_SUFFIX)]):
            os.unlink(path / name)
            removed = True
    if removed:
        sync_dir(path, syncer)


def list_segments(path: Path) -> list[tuple[int, Path]]:
    """Segment files sorted by ``seq``; a gap in the sequence is corruption."""
    found = []
    for name in os.listdir(path):
        match = SEGMENT_RE.fullmatch(name)
        if match:
            found.append((int(match.group(1), 16), path / name))
    found.sort()
    for (seq_a, _), (seq_b, path_b) in itertools.pairwise(found):
        if seq_b != seq_a + 1:
            reason = "duplicate" if seq_b == seq_a else f"segment {seq_a + 1} is missing before it"
            raise WalCorrupted(path_b, 0, reason)
    return found


def cut_tail(path: Path, offset: int, syncer: Syncer) -> None:
    """Durably drop everything from ``offset`` on (the whole file if ``offset`` is 0)."""
    if offset == 0:
        os.unlink(path)
        sync_dir(path.parent, syncer)
        return
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.ftruncate(fd, offset)
        syncer.sync_file(fd)
    finally:
        os.close(fd)


def snapshot_name(meta: SnapshotMeta) -> str:
    return f"snap-{meta.index:016x}-{meta.term:016x}.snap"


def write_snapshot_file(directory: Path, snapshot: Snapshot, syncer: Syncer) -> None:
    """Write, fsync, rename into place, fsync the directory."""
    final = directory / snapshot_name(snapshot.meta)
    temporary = final.with_name(final.name + TMP_SUFFIX)
    content = codec.encode_snapshot_file(snapshot.meta, snapshot.data)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        write_all(fd, content, 0)
        syncer.sync_file(fd)
    finally:
        os.close(fd)
    os.replace(temporary, final)
    sync_dir(directory, syncer)


def load_snapshot(directory: Path, meta: SnapshotMeta) -> Snapshot:
    path = directory / snapshot_name(meta)
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise WalCorrupted(path, 0, "the log's snapshot file is missing") from None
    except OSError as exc:
        raise WalFailed(exc) from exc
    try:
        stored, data = codec.decode_snapshot_file(content)
    except codec.MalformedRecord as exc:
        raise WalCorrupted(path, exc.offset, exc.reason) from None
    if stored != meta:
        raise WalCorrupted(path, 0, f"snapshot file holds {stored}, the log expects {meta}")
    return Snapshot(meta=stored, data=data)

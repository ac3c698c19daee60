"""The root's lock file and control-socket admission.

``<socket_dir>/mitosis.lock`` is held with an exclusive ``flock`` by the live
root and holds its pid: a second root is refused naming that pid, and the
CLI learns whether a root runs (and which pid to wait for) without racing
on a pid file. The control socket admits only peers of the root's uid,
checked with ``SO_PEERCRED`` before the hello.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path

import attrs

from ..config import Paths, ensure_private_dir
from .errors import RootAlreadyRunning


@attrs.define(eq=False)
class RootLock:
    """``<socket_dir>/mitosis.lock``: held (flock) by the live root, holding its pid."""

    path: Path
    fd: int

    @classmethod
    def acquire(cls, paths: Paths) -> RootLock:
        """Take the lock or raise :class:`RootAlreadyRunning` naming the holder's pid."""
        ensure_private_dir(paths.socket_dir)
        path = paths.socket_dir / "mitosis.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_root_pid(paths)
            os.close(fd)
            raise RootAlreadyRunning(holder, str(paths.socket_dir)) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:  # (a full disk: name the file, do not keep the lock)
            os.close(fd)
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        return cls(path=path, fd=fd)

    def release(self) -> None:
        """Empty the pid and drop the lock (the file stays: unlinking would race)."""
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
        os.close(self.fd)

    def __enter__(self) -> RootLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_root_pid(paths: Paths) -> int | None:
    """The pid written by the live root, or None (no root, or an unreadable file)."""
    try:
        text = (paths.socket_dir / "mitosis.lock").read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def root_is_running(paths: Paths) -> bool:
    """True while some root holds the lock of ``paths.socket_dir``."""
    try:
        fd = os.open(paths.socket_dir / "mitosis.lock", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def peer_uid_filter(uid: int) -> Callable[[socket.socket], str | None]:
    """An accept filter admitting only peers whose ``SO_PEERCRED`` uid is ``uid``."""

    def check(sock: socket.socket) -> str | None:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, peer_uid, _gid = struct.unpack("3i", creds)
        if peer_uid != uid:
            return f"pid {pid} runs as uid {peer_uid}; only uid {uid} may control this root"
        return None

    return check


__all__ = ["RootLock", "peer_uid_filter", "read_root_pid", "root_is_running"]

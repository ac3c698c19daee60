"""Socket files of membranes: bind without stealing, adopt a handed-over listener.

A membrane's socket file may be left behind by a process that died. Binding
replaces such a *stale* file but never a *live* one (something accepts on it),
and never a file that is not a socket. The check-and-replace runs under an
exclusive ``flock`` of the directory, so two processes starting at once cannot
unlink each other's fresh socket.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
from pathlib import Path

from ..config import ensure_private_dir
from ..errors import (
    ConfigError,
    MembraneInUse,
)


def _probe_live(path: Path) -> bool:
    """True if something accepts connections on ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(os.fspath(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError as exc:
        # Anything but "refused"/"absent" (e.g. EAGAIN: backlog full) means alive.
        return exc.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    finally:
        probe.close()
    return True


def bind_unix_listener(path: Path, backlog: int = 1024, *, mode: int = 0o600) -> socket.socket:
    """Bind and listen on ``path``: replace a stale socket file, never steal a live one.

    The check-and-replace runs under an exclusive ``flock`` of the directory so
    two processes starting at once cannot unlink each other's fresh socket.
    Raises :class:`MembraneInUse` for a live socket and :class:`ConfigError`
    when a non-socket file is in the way. ``mode`` is the socket file's mode:
    0600 by default; the root uses 0666 for sockets it binds into sandboxes
    whose cells run as another uid (the 0700 directory still keeps every
    other host user out).
    """
    ensure_private_dir(path.parent)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise ConfigError(str(path), "exists and is not a socket; refusing to replace it")
            if _probe_live(path):
                raise MembraneInUse(str(path))
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(os.fspath(path))
            os.chmod(path, mode)
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        return sock
    finally:
        os.close(dir_fd)


def listener_problem(fd: int) -> str | None:
    """Why ``fd`` is not an inherited listening AF_UNIX stream socket (None: it is).

    Only looks: the descriptor is neither taken over nor closed.
    """
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        return f"{fd} is not a socket ({exc.strerror or exc})"
    try:
        if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
            return f"{fd} is not an AF_UNIX stream socket"
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            return f"{fd} is not listening"
        return None
    finally:
        sock.detach()


def adopt_listener(fd: int) -> socket.socket:
    """Wrap an inherited listening AF_UNIX stream socket fd (socket activation)."""
    problem = listener_problem(fd)
    if problem is not None:
        raise ConfigError("listen_fd", problem)
    return socket.socket(fileno=fd)

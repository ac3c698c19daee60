"""A cell's data directory, opened and handed over without following a symlink.

Theory of operation
-------------------
The data dir ``<CELL_HOME>/data/<cell>`` is chowned to the uid a bwrap cell
runs as and bound read-write into the sandbox. Both must act on *that*
directory, never on whatever a symlink planted at its name points to (a
root-owned directory would otherwise be chowned to ``nobody`` and bound
writable into the cell). So:

* :func:`open_data_dir` opens the parent (which must be ours and not
  writable by group or others: nobody else can swap names in it), creates
  the last component with ``mkdirat`` if needed, and opens it with
  ``O_NOFOLLOW | O_DIRECTORY``; ``fstat`` on that descriptor checks the
  owner. Everything after works on the descriptor.
* :func:`hand_over` chowns through descriptors: ``fchown`` on the top, then a
  walk by directory descriptors (:func:`os.fwalk`, which never follows a
  symlink) with ``fchownat(AT_SYMLINK_NOFOLLOW)`` per entry; a symlink the
  cell made inside is chowned itself, its target never.
* the bind mount made for it in the spawned child (see
  :func:`~cellmesh.sandbox._spawn.spawn_isolated_workload`, ``pinned``)
  opens the source again with ``O_PATH | O_NOFOLLOW``, checks it is the
  same inode (device and inode number) that was checked here, and mounts
  from that descriptor: a directory swapped in meanwhile is refused.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Collection, Container
from pathlib import Path
from typing import Final

from .errors import SandboxConfigError

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def open_data_dir(path: Path, *, owners: Container[int]) -> int:
    """Create (mode 0700) and open the data dir ``path``; the caller closes the fd.

    Raises :class:`SandboxConfigError` naming the path when its parent is not
    ours or is writable by group or others, or when ``path`` is a symlink,
    not a directory, or owned by a uid not in ``owners``.
    """
    parent = path.parent
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        pfd = os.open(parent, _DIR_FLAGS)
    except OSError as exc:
        raise SandboxConfigError("data_dir", f"{parent} cannot be opened: {exc.strerror}") from None
    try:
        st = os.fstat(pfd)
        if st.st_uid != os.getuid() or st.st_mode & 0o022:
            raise SandboxConfigError(
                "data_dir",
                f"{parent} must be owned by uid {os.getuid()} and not writable by group or "
                f"others (it is uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o})",
            )
        with contextlib.suppress(FileExistsError):
            os.mkdir(path.name, 0o700, dir_fd=pfd)
        try:
            fd = os.open(path.name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=pfd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise SandboxConfigError(
                    "data_dir", f"{path} is a symlink or not a directory; refusing to use it"
                ) from None
            raise SandboxConfigError(
                "data_dir", f"{path} cannot be opened: {exc.strerror}"
            ) from None
    finally:
        os.close(pfd)
    st = os.fstat(fd)
    if st.st_uid not in owners:
        os.close(fd)
        raise SandboxConfigError(
            "data_dir", f"{path} is owned by uid {st.st_uid}, not by {_described(owners)}"
        )
    return fd


def _described(owners: Container[int]) -> str:
    """``owners`` for an error: a small collection sorted, anything else as it prints."""
    if isinstance(owners, Collection):
        return str(sorted(owners))
    return str(owners)


def hand_over(fd: int, uid: int) -> None:
    """Chown the directory ``fd`` and everything below it to ``uid`` (see the module doc)."""
    os.fchown(fd, uid, uid)
    for _top, dirnames, filenames, dir_fd in os.fwalk(".", dir_fd=fd, follow_symlinks=False):
        for name in (*dirnames, *filenames):
            os.chown(name, uid, uid, dir_fd=dir_fd, follow_symlinks=False)


__all__ = ["hand_over", "open_data_dir"]

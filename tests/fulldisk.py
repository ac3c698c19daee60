"""Really full disks for tests: a small tmpfs mounted for the test, filled to the last byte.

Mounting needs root; the tests that use these skip otherwise (``NEEDS_ROOT``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Mark for the modules that mount: they need root.
NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs (needs root)")


@contextlib.contextmanager
def small_tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``64k``, ``24m``) at ``mount`` (made, mode 0700) for the block."""
    mount.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mount)],
        check=True,
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Write a file on ``disk`` until no byte fits; return it (unlink it to make room)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (65536, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)
    return filler

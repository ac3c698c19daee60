"""The CLI's client of the control socket: which error says what."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from cellmesh.actors._rootlock import RootLock
from cellmesh.actors.errors import RootNotRunning, RootUnreachable
from cellmesh.cli._client import open_root
from cellmesh.config import Paths, ensure_home


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    paths = Paths.from_env({"CELL_HOME": str(tmp_path / "home")})
    ensure_home(paths)
    return paths


async def test_no_root_is_root_not_running(paths: Paths) -> None:
    with pytest.raises(RootNotRunning, match="no root is running"):
        async with open_root(paths):
            pass


async def test_a_running_root_that_does_not_serve_us_is_not_called_absent(paths: Paths) -> None:
    """A root holds its lock, but its control socket refuses us (say, at its connection
    limit): the CLI must not tell the operator that no root is running."""
    lock = RootLock.acquire(paths)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(paths.umbilical))
        listener.listen(1)
        os.chmod(paths.umbilical, 0o600)
        listener.close()  # the socket file stays; nothing accepts: refused
        with pytest.raises(RootUnreachable) as info:
            async with open_root(paths):
                pass
        assert f"the root (pid {os.getpid()}) is running but did not serve" in str(info.value)
    finally:
        listener.close()
        lock.release()


async def test_a_root_that_accepts_but_never_answers_is_named_not_a_cell(
    paths: Paths, autojump_clock: object
) -> None:
    """A stopped (SIGSTOP) root: the kernel accepts the connection, nobody says
    hello. The error is about the root, not 'no hello from the cell'."""
    lock = RootLock.acquire(paths)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(paths.umbilical))
        listener.listen(8)  # the backlog accepts; nothing ever reads or writes
        os.chmod(paths.umbilical, 0o600)
        with pytest.raises(RootUnreachable) as info:
            async with open_root(paths):
                pass
        assert "did not answer within 10 s (stopped, or too busy)" in str(info.value)
        assert "from the cell" not in str(info.value)
    finally:
        listener.close()
        lock.release()


def test_output_to_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`cellmesh logs db | head -1`: the reader went away; no traceback, exit 141."""
    import subprocess
    import sys

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "db.log").write_bytes(b"serving\n" * 50_000)  # more than a pipe holds
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write now fails with EPIPE
    try:
        result = subprocess.run(
            [sys.executable, "-m", "cellmesh", "logs", "db", "-n", "50000"], stdout=write_end,
            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, timeout=120,
            check=False, env={**os.environ, "CELL_HOME": str(tmp_path)},
        )
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == 141


def test_output_to_a_full_disk_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """`cellmesh logs db > /dev/full`: the error is named in one line, exit 1."""
    import subprocess
    import sys

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "db.log").write_bytes(b"serving\n" * 50_000)
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "cellmesh", "logs", "db", "-n", "50000"], stdout=full,
            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, timeout=120,
            check=False, env={**os.environ, "CELL_HOME": str(tmp_path)},
        )
    assert result.stderr == "cellmesh: error: [Errno 28] No space left on device\n"
    assert result.returncode == 1

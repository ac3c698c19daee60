"""The CLI's client of the control socket: which error says what."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
import trio

from cellmesh.actors._rootlock import RootLock
from cellmesh.actors.control import ChangeReplicas, KillCell, StatusRequest
from cellmesh.actors.errors import RootNotRunning, RootUnreachable
from cellmesh.actors.lastwords import LastWords, write_last_words
from cellmesh.cli import _client
from cellmesh.cli._client import RootStopped, control_call, open_root
from cellmesh.config import Paths, ensure_home
from cellmesh.transport.membrane import open_membrane


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


async def _cut_short(paths: Paths, msg: Any, *, then_exit: bool) -> BaseException:
    """A root (its lock held here) that closes the control connection while it serves
    ``msg``, then, ``then_exit``, writes clean last words and releases its lock as a
    root that stopped on request does; what ``control_call`` raised."""
    lock = RootLock.acquire(paths)
    asked = trio.Event()

    async def answer(request: Any) -> Any:
        asked.set()
        await trio.sleep_forever()

    raised: list[BaseException] = []

    async def call() -> None:
        try:
            await control_call(paths, msg)
        except Exception as exc:
            raised.append(exc)

    try:
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as serving:
                async with open_membrane("mitosis", answer, socket_path=paths.umbilical):
                    nursery.start_soon(call)
                    await asked.wait()
                    serving.cancel()  # the root's stop: its connections closed at once
                    await trio.sleep_forever()
            if then_exit:
                write_last_words(paths, LastWords(
                    pid=os.getpid(), state="stopped", started_at=1.0, stopped_at=2.0, clean=True,
                ))
                lock.release()
    finally:
        if not then_exit:
            lock.release()
    (exc,) = raised
    return exc


@pytest.mark.parametrize(("msg", "outcome"), [
    (StatusRequest(), ""),
    (KillCell(name="db"), ": whether the request took effect is unknown (see the root's log)"),
    (ChangeReplicas(name="db", count=5), ": the change stopped part-way: the next `up` "
     "completes the join of a replica it was adding, then applies the manifest's `replicas` "
     "(the root's log says how far it got)"),
])
async def test_a_root_that_stops_while_serving_a_request_is_named_stopped(
    paths: Paths, msg: Any, outcome: str
) -> None:
    """`cellmesh down` while a request runs: the root closes the connection, then exits.
    The error says it stopped on request, not that it "is running but did not serve this
    request" (its lock was still held when the connection closed), nor that no root runs."""
    exc = await _cut_short(paths, msg, then_exit=True)
    assert isinstance(exc, RootStopped) and isinstance(exc, RootNotRunning)
    assert str(exc) == (f"the root (pid {os.getpid()}) stopped on request (`cellmesh down`, "
                        f"or a signal) while it served this request{outcome}")


async def test_a_root_that_closes_a_request_and_runs_on_is_unreachable(
    paths: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A root that drops a request's connection but does not exit within STOP_PATIENCE
    seconds is not called stopped."""
    monkeypatch.setattr(_client, "STOP_PATIENCE", 0.3)
    exc = await _cut_short(paths, StatusRequest(), then_exit=False)
    assert isinstance(exc, RootUnreachable)
    assert f"the root (pid {os.getpid()}) is running but did not serve" in str(exc)
    assert "closed the connection in the middle of it" in str(exc)
    assert "still runs 0.3 s later" in str(exc)

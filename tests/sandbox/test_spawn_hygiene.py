"""Spawn hygiene, checked on real children through /proc/<pid>/environ and /proc/<pid>/fd."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from cellmesh.sandbox import (
    CellBackend,
    CellSpec,
    Limits,
    SandboxConfigError,
    WorkloadEnv,
    spawn_isolated_workload,
)
from cellmesh.sandbox._process import runtime_env

from .conftest import workload_pid

PY = sys.executable
#: Waits for EOF on stdin, then blocks until killed: the parent inspects it meanwhile.
HOLD = "import os, sys; sys.stdin.read(); os.write(1, b'eof\\n'); import time; time.sleep(120)"


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    out = {}
    for item in raw.split(b"\0"):
        if item:
            key, _, value = item.decode().partition("=")
            out[key] = value
    return out


def _fds(pid: int) -> dict[int, str]:
    base = Path(f"/proc/{pid}/fd")
    return {int(fd): os.readlink(base / fd) for fd in os.listdir(base)}


def _read_line(fd: int) -> bytes:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            break
        buf += chunk
    return buf


def test_environ_is_exactly_the_declared_set() -> None:
    env = WorkloadEnv(items={"ONLY": "this", "AND": "that"})
    os.environ["CELLMESH_LEAK_CANARY"] = "leaked"
    r, w = os.pipe()
    try:
        wl = spawn_isolated_workload([PY, "-c", HOLD], env, stdout=w)
        os.close(w)
        assert _read_line(r) == b"eof\n"  # stdin was at EOF: the write end is closed
        assert _environ(wl.pid) == {"ONLY": "this", "AND": "that"}
    finally:
        del os.environ["CELLMESH_LEAK_CANARY"]
        os.close(r)
    wl.send_signal(9)
    assert wl.wait(30) == -9
    wl.close()


def test_only_passed_fds_survive_and_at_stable_numbers() -> None:
    leaky_r, leaky_w = os.pipe()
    os.set_inheritable(leaky_r, True)  # an inheritable fd that must still not leak
    os.set_inheritable(leaky_w, True)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    extra_r, extra_w = os.pipe()
    out_r, out_w = os.pipe()
    try:
        # Passed in "reverse" order: the socket must land on 3, the pipe on 4.
        wl = spawn_isolated_workload(
            [PY, "-c", HOLD],
            WorkloadEnv(),
            pass_fds=[listener.fileno(), extra_r],
            stdout=out_w,
        )
        os.close(out_w)
        assert _read_line(out_r) == b"eof\n"
        fds = _fds(wl.pid)
        assert sorted(fds) == [0, 1, 2, 3, 4]
        assert fds[0].startswith("pipe:")
        assert fds[3] == f"socket:[{os.fstat(listener.fileno()).st_ino}]"
        assert fds[4] == f"pipe:[{os.fstat(extra_r).st_ino}]"
    finally:
        for fd in (leaky_r, leaky_w, extra_r, extra_w, out_r):
            os.close(fd)
        listener.close()
    wl.send_signal(9)
    wl.wait(30)
    wl.close()


def test_keep_stdin_gives_the_caller_a_pipe() -> None:
    r, w = os.pipe()
    wl = spawn_isolated_workload(
        [PY, "-c", "import sys; sys.stdout.write(sys.stdin.read().upper())"],
        WorkloadEnv(),
        stdout=w,
        keep_stdin=True,
    )
    os.close(w)
    assert wl.stdin is not None
    os.write(wl.stdin, b"hello")
    wl.close()  # closes our stdin end: the child sees EOF
    assert os.read(r, 100) == b"HELLO"
    os.close(r)
    assert wl.wait(30) == 0


@pytest.mark.parametrize("argv", [[], [""]])
def test_empty_argv_is_rejected(argv: list[str]) -> None:
    with pytest.raises(SandboxConfigError):
        spawn_isolated_workload(argv, WorkloadEnv())


def test_closed_fd_cannot_be_passed() -> None:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(SandboxConfigError):
        spawn_isolated_workload([PY, "-c", "pass"], WorkloadEnv(), pass_fds=[r])


def test_new_session_and_no_controlling_terminal() -> None:
    r, w = os.pipe()
    wl = spawn_isolated_workload(
        [PY, "-c", "import os; print(os.getsid(0) == os.getpid(), os.getpgrp() == os.getpid())"],
        WorkloadEnv(),
        stdout=w,
    )
    os.close(w)
    assert wl.wait(30) == 0
    assert os.read(r, 100) == b"True True\n"
    os.close(r)
    wl.close()


def test_backend_child_environ_and_fds(real_backend: CellBackend) -> None:
    """The backends add only the documented runtime variables and pass fds at 3.."""
    listener = socket.socket(socket.AF_UNIX)
    r, w = os.pipe()
    real_backend.create(
        CellSpec(name="hyg", argv=[PY, "-c", HOLD], env=WorkloadEnv(items={"MINE": "1"}))
    )
    try:
        proc = real_backend.spawn("hyg", pass_fds=[listener.fileno()], stdout=w)
        os.close(w)
        w = -1
        assert _read_line(r) == b"eof\n"
        pid = workload_pid(real_backend, proc.pid)
        env = _environ(pid)
        runtime = {
            "CELL_NAME", "HOME", "TMPDIR", "PWD", "PATH", "CELL_SOCKET_DIR",
            "CELL_LISTEN_FDS", "CELL_LISTEN_FDS_START",
        }  # fmt: skip
        assert set(env) == {"MINE"} | runtime
        assert env["MINE"] == "1"
        assert env["CELL_LISTEN_FDS"] == "1"
        fds = _fds(pid)
        assert sorted(fds) == [0, 1, 2, 3]
        assert fds[3] == f"socket:[{os.fstat(listener.fileno()).st_ino}]"
    finally:
        if w >= 0:
            os.close(w)
        os.close(r)
        listener.close()


HOLES = """
import os, sys
from cellmesh.sandbox import WorkloadEnv, spawn_isolated_workload
# fds 3, 4, 5 are free here: the targets must be occupied while Popen runs, so
# its error pipe cannot land on them, and the pipe below must appear at 3.
r, w = os.pipe()
high_r = os.dup2(r, 40)
os.close(r)
for fd in range(3, 10):
    if fd != w:
        try:
            os.close(fd)
        except OSError:
            pass
wl = spawn_isolated_workload(
    [sys.executable, "-c", "import os; print(sorted(os.listdir('/proc/self/fd')), os.read(3, 5))"],
    WorkloadEnv(),
    pass_fds=[high_r],
    stdout=1,
)
os.write(w, b"hello")
sys.exit(wl.wait(30))
"""


def test_passed_fds_land_on_free_low_numbers() -> None:
    import subprocess

    out = subprocess.run([PY, "-c", HOLES], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['0', '1', '2', '3', '4'] b'hello'"


@pytest.mark.parametrize(
    ("cpu", "declared", "expected"),
    [(0.5, None, "0"), (0.5, "40", "40"), (1.0, None, None), (None, None, None)],
)
def test_a_cell_under_one_cpu_does_not_spin_unless_its_env_says_so(
    cpu: float | None, declared: str | None, expected: str | None
) -> None:
    """Polling before sleeping would spend the CPU quota the cell is throttled on."""
    items = {} if declared is None else {"CELL_SPIN_US": declared}
    spec = CellSpec(name="q", argv=[PY], env=WorkloadEnv(items=items), limits=Limits(cpu=cpu))
    env = dict(runtime_env(
        spec, n_fds=0, home="/h", cwd="/h", socket_dir="/s", data_dir=None, dna_dir=None,
        path="/usr/bin", secrets=(), secret_files={},
    ).items)
    assert env.get("CELL_SPIN_US") == expected

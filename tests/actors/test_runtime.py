"""The cell runtime as a real process: ``python -m cellmesh.actors.runtime``.

Each test writes a small cell module into a temp DNA dir. The membrane's
listening socket is bound here and handed over as fd 3 (socket activation),
so connecting never races the child's start-up.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import cellmesh
from cellmesh.actors.control import Ack, CellReady, CellStats
from cellmesh.actors.runtime import (
    EXIT_CONFIG,
    CellEnv,
    has_memory_error,
    run_cell,
)
from cellmesh.sandbox import MEMORY_LIMIT_EXIT_CODE
from cellmesh.transport._sockets import bind_unix_listener

PY = sys.executable
#: Moves the inherited listener to fd 3, then runs the runtime as ``-m`` would.
SHIM = (
    "import os, runpy, sys; fd = int(sys.argv.pop(1)); "
    "fd != 3 and (os.dup2(fd, 3), os.close(fd)); "
    "runpy.run_module('cellmesh.actors.runtime', run_name='__main__', alter_sys=True)"
)

CELL_MODULE = '''
from __future__ import annotations
import os
from pathlib import Path
import cellmesh

@cellmesh.protein("tests.rt.Add")
class Add:
    n: int

@cellmesh.protein("tests.rt.Total")
class Total:
    total: int

class Counter(cellmesh.Cell):
    total = 0

    async def on_start(self) -> None:
        mode = os.environ.get("TEST_MODE", "")
        if mode == "crash":
            raise RuntimeError("on_start failed on purpose")
        if mode == "greedy":
            self.hog = bytearray(8 << 30)
        if mode == "cbor-oom":
            # Room for the input and cbor2's output buffer, not for the bytes object
            # it copies them into: that allocation fails inside the Rust extension.
            import cbor2, resource, sys
            limit = resource.getrlimit(resource.RLIMIT_AS)[0]
            with open("/proc/self/status") as status:
                size = next(int(line.split()[1]) << 10 for line in status
                            if line.startswith("VmSize:"))
            blob = b"x" * ((limit - size) * 38 // 100)
            try:
                cbor2.dumps({"blob": blob})
            except BaseException as exc:
                sys.stderr.write(f"dumps raised {type(exc).__module__}.{type(exc).__name__}\\n")
                raise

    async def on_stop(self) -> None:
        assert self.data_dir is not None
        (self.data_dir / "stopped").write_text(str(self.total))

    @cellmesh.receptor
    async def add(self, msg: Add) -> Total:
        self.total += msg.n
        return Total(total=self.total)
'''


#: Imported in-process by the entry tests: no proteins (they would register twice).
PLAIN_MODULE = """
import cellmesh

class Plain(cellmesh.Cell):
    pass

NotACell = int
"""


@cellmesh.protein("tests.rt.Add")
class Add:
    n: int


@cellmesh.protein("tests.rt.Total")
class Total:
    total: int


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Short path: Unix socket paths are limited to 107 bytes.
    with tempfile.TemporaryDirectory(prefix="cmrt-", dir="/tmp") as d:
        root = Path(d)
        for sub in ("dna", "data", "run"):
            (root / sub).mkdir(mode=0o700)
        (root / "dna" / "counter_cell.py").write_text(CELL_MODULE)
        (root / "dna" / "plain_cell.py").write_text(PLAIN_MODULE)
        yield root


def cell_env(workdir: Path, **extra: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CELL_NAME": "counter",
        "CELL_ENTRY": "counter_cell:Counter",
        "CELL_DNA_DIR": str(workdir / "dna"),
        "CELL_DATA_DIR": str(workdir / "data"),
        "CELL_SOCKET_DIR": str(workdir / "run"),
        "CELL_LISTEN_FDS": "1",
    }
    env.update(extra)
    return env


async def start_cell(
    workdir: Path, listener: socket.socket, **extra: str
) -> trio.Process:
    return await trio.lowlevel.open_process(
        [PY, "-c", SHIM, str(listener.fileno())],
        env=cell_env(workdir, **extra),
        pass_fds=(listener.fileno(),),
        stderr=subprocess.PIPE,
    )


async def finish(proc: trio.Process, timeout: float = 30) -> tuple[int, str]:
    """Wait for the exit; return the code and stderr."""
    assert proc.stderr is not None
    chunks = []
    with trio.fail_after(timeout):
        while chunk := await proc.stderr.receive_some():
            chunks.append(chunk)
        code = await proc.wait()
    return code, b"".join(chunks).decode(errors="replace")


@pytest.fixture
def listener(workdir: Path) -> Iterator[socket.socket]:
    sock = bind_unix_listener(workdir / "run" / "counter.sock")
    yield sock
    sock.close()


def run_sync(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The runtime standalone: no inherited listener (it would bind its own socket)."""
    env = {k: v for k, v in env.items() if k != "CELL_LISTEN_FDS"}
    return subprocess.run(
        [PY, "-m", "cellmesh.actors.runtime"], env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )


# ---------------------------------------------------------------- serving


async def test_runtime_serves_calls_and_exits_0_on_sigterm_after_on_stop(
    workdir: Path, listener: socket.socket
) -> None:
    proc = await start_cell(workdir, listener)
    try:
        async with cellmesh.Synapse.grow(
            "counter", socket_path=workdir / "run" / "counter.sock"
        ) as syn:
            assert await syn.fire(Add(n=3)) == Total(total=3)
            assert await syn.fire(Add(n=4)) == Total(total=7)
        proc.send_signal(signal.SIGTERM)
        code, err = await finish(proc)
    finally:
        proc.kill()
    assert code == 0, err
    assert (workdir / "data" / "stopped").read_text() == "7"
    assert "SIGTERM" in err


async def test_runtime_binds_its_own_socket_without_listen_fds(workdir: Path) -> None:
    ready = trio.Event()

    async def root(msg: Any) -> Any:
        if isinstance(msg, CellReady):
            ready.set()
        return None

    env = cell_env(workdir)
    del env["CELL_LISTEN_FDS"]
    env["CELL_ENTRY"] = "counter_cell"  # module form: exactly one Cell subclass
    umbilical = workdir / "umb" / "mitosis.sock"
    env["CELL_UMBILICAL"] = str(umbilical)
    path = workdir / "run" / "counter.sock"
    async with cellmesh.open_membrane("mitosis", root, socket_dir=umbilical.parent):
        proc = await trio.lowlevel.open_process(
            [PY, "-m", "cellmesh.actors.runtime"], env=env, stderr=subprocess.PIPE
        )
        try:
            with trio.fail_after(30):
                await ready.wait()  # CellReady goes out once the membrane serves
            async with cellmesh.Synapse.grow("counter", socket_path=path) as syn:
                assert await syn.fire(Add(n=1)) == Total(total=1)
            proc.send_signal(signal.SIGINT)
            code, err = await finish(proc)
        finally:
            proc.kill()
    assert code == 0, err
    assert not path.exists()  # the runtime removes the socket it bound


async def test_runtime_reports_ready_and_stops_when_the_root_closes_the_umbilical(
    workdir: Path, listener: socket.socket
) -> None:
    seen: list[Any] = []
    ready = trio.Event()

    async def root(msg: Any) -> Any:
        seen.append(msg)
        if isinstance(msg, CellReady):
            ready.set()
            return Ack(text="ok")
        assert isinstance(msg, CellStats)
        return None

    umbilical = workdir / "umb" / "mitosis.sock"
    async with cellmesh.open_membrane("mitosis", root, socket_dir=umbilical.parent):
        proc = await start_cell(workdir, listener, CELL_UMBILICAL=str(umbilical))
        try:
            with trio.fail_after(30):
                await ready.wait()
        except BaseException:
            proc.kill()
            raise
    # The root's membrane closed (as when the root dies): the cell stops on its own.
    try:
        code, err = await finish(proc)
    finally:
        proc.kill()
    assert code == 0, err
    assert isinstance(seen[0], CellReady)
    assert seen[0].pid == proc.pid
    assert "umbilical" in err
    assert (workdir / "data" / "stopped").exists()


# ---------------------------------------------------------------- failures


async def test_runtime_exits_1_with_a_traceback_when_on_start_crashes(
    workdir: Path, listener: socket.socket
) -> None:
    proc = await start_cell(workdir, listener, TEST_MODE="crash")
    try:
        code, err = await finish(proc)
    finally:
        proc.kill()
    assert code == 1
    assert "Traceback" in err
    assert "on_start failed on purpose" in err


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def test_runtime_exits_137_on_memory_error(workdir: Path) -> None:
    env = cell_env(workdir, TEST_MODE="greedy")
    del env["CELL_LISTEN_FDS"]
    result = subprocess.run(
        [PY, "-m", "cellmesh.actors.runtime"], env=env, capture_output=True, text=True,
        timeout=60, check=False, preexec_fn=_limit_memory,
    )
    assert result.returncode == MEMORY_LIMIT_EXIT_CODE, result.stderr
    assert "MemoryError" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("change", "variable", "text"),
    [
        ({"CELL_NAME": ""}, "CELL_NAME", "is not set"),
        ({"CELL_NAME": "../x"}, "CELL_NAME", "not a valid cell name"),
        ({"CELL_ENTRY": ""}, "CELL_ENTRY", "is not set"),
        ({"CELL_ENTRY": "a:b:c"}, "CELL_ENTRY", "is not 'module:Class'"),
        ({"CELL_ENTRY": "no_such_module:X"}, "CELL_ENTRY", "module 'no_such_module' not found"),
        ({"CELL_ENTRY": "plain_cell:NotACell"}, "CELL_ENTRY", "not a cellmesh.Cell subclass"),
        ({"CELL_ENTRY": "plain_cell:Nope"}, "CELL_ENTRY", "has no attribute 'Nope'"),
        ({"CELL_ENTRY": "os"}, "CELL_ENTRY", "exactly one Cell subclass"),
        ({"CELL_LISTEN_FDS": "x"}, "CELL_LISTEN_FDS", "must be a number of fds"),
        ({"CELL_DATA_DIR": "rel"}, "CELL_DATA_DIR", "absolute"),
        ({"CELL_SPIN_US": "fast"}, "CELL_SPIN_US", "whole number of microseconds"),
        ({"CELL_SPIN_US": "20000"}, "CELL_SPIN_US", "at most 10000"),
    ],
)
def test_runtime_env_errors_name_the_variable(
    workdir: Path, change: dict[str, str], variable: str, text: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_class prepends CELL_DNA_DIR
    with pytest.raises(cellmesh.ConfigError) as info:
        CellEnv.from_env(cell_env(workdir, **change)).load_class()
    assert info.value.source == variable
    assert text in str(info.value)


def test_runtime_loads_a_module_entry_with_one_cell(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    cls = CellEnv.from_env(cell_env(workdir, CELL_ENTRY="plain_cell")).load_class()
    assert cls.__name__ == "Plain"
    assert sys.path[0] == str(workdir / "dna")


def test_runtime_exits_1_when_the_cell_module_fails_to_import(workdir: Path) -> None:
    (workdir / "dna" / "broken_cell.py").write_text("import no_such_dependency\n")
    result = run_sync(cell_env(workdir, CELL_ENTRY="broken_cell"))
    assert result.returncode == 1
    assert "no_such_dependency" in result.stderr
    assert "Traceback" in result.stderr


def test_runtime_exits_2_with_one_line_naming_the_variable(workdir: Path) -> None:
    result = run_sync(cell_env(workdir, CELL_ENTRY="no_such_module:Counter"))
    assert result.returncode == EXIT_CONFIG
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "CELL_ENTRY" in lines[0]
    env = cell_env(workdir)
    del env["CELL_NAME"]
    result = run_sync(env)
    assert (result.returncode, "CELL_NAME" in result.stderr) == (EXIT_CONFIG, True)


async def test_runtime_run_cell_returns_2_on_a_bad_entry(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run_cell(cell_env(workdir, CELL_ENTRY="1bad")) == EXIT_CONFIG
    assert "CELL_ENTRY" in capsys.readouterr().err


def test_runtime_exits_137_when_cbor2_panics_out_of_memory(workdir: Path) -> None:
    """cbor2 (Rust, pyo3) turns a failed allocation into ``pyo3_runtime.PanicException:
    PyObject pointer is null``, a BaseException that chains no MemoryError: it is
    still a memory kill (exit 137, "MemoryError"), not an unexplained crash."""
    env = cell_env(workdir, TEST_MODE="cbor-oom")
    del env["CELL_LISTEN_FDS"]
    result = subprocess.run(
        [PY, "-m", "cellmesh.actors.runtime"], env=env, capture_output=True, text=True,
        timeout=60, check=False, preexec_fn=_limit_memory,
    )
    assert "dumps raised " in result.stderr, result.stderr  # the allocation failed
    if "dumps raised pyo3_runtime.PanicException" not in result.stderr:
        pytest.skip(f"this cbor2 raised no panic out of memory: {result.stderr[-300:]!r}")
    assert result.returncode == MEMORY_LIMIT_EXIT_CODE, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        "cellmesh.actors.runtime: MemoryError: out of memory"
    ), result.stderr


def test_runtime_memory_error_is_found_in_groups_and_causes() -> None:
    assert has_memory_error(MemoryError())
    assert has_memory_error(BaseExceptionGroup("g", [ValueError(), MemoryError()]))
    wrapped = RuntimeError("x")
    wrapped.__cause__ = MemoryError()
    assert has_memory_error(wrapped)
    assert not has_memory_error(ValueError())
    assert not has_memory_error(None)
    # pyo3's panic for a failed allocation, and only that one
    panic = type("PanicException", (BaseException,), {"__module__": "pyo3_runtime"})
    assert has_memory_error(panic("PyObject pointer is null"))
    assert has_memory_error(BaseExceptionGroup("g", [panic("PyObject pointer is null")]))
    assert not has_memory_error(panic("index out of bounds"))
    assert not has_memory_error(type("PanicException", (BaseException,), {})("pointer is null"))


# ---------------------------------------------------------------- sandbox


def test_runtime_memory_limit_in_the_host_sandbox_is_reported_as_limit(
    workdir: Path, tmp_path: Path
) -> None:
    from cellmesh.config import Paths
    from cellmesh.sandbox import (
        CellSpec,
        CgroupHost,
        HostBackend,
        Limits,
        MemoryEventLog,
        MemorySecretBroker,
        WorkloadEnv,
    )

    home = tmp_path / "home"
    home.mkdir()
    backend = HostBackend(
        Paths.from_env({"CELL_HOME": str(home)}), MemoryEventLog(), MemorySecretBroker(),
        CgroupHost.detect({}),
    )
    repo = str(Path(cellmesh.__file__).resolve().parent.parent)
    backend.create(CellSpec(
        name="greedy",
        argv=(PY, "-m", "cellmesh.actors.runtime"),
        env=WorkloadEnv(items={
            "CELL_ENTRY": "counter_cell:Counter", "TEST_MODE": "greedy", "PYTHONPATH": repo,
        }),
        limits=Limits(memory=512 << 20),
        dna_dir=workdir / "dna",
        data_dir=workdir / "data",
    ))
    try:
        backend.spawn("greedy", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        status = backend.wait("greedy", timeout=60)
    finally:
        backend.destroy("greedy", grace=1)
    assert (status.reason, status.limit) == ("limit", "memory"), status


# ---------------------------------------------------------------- standby


async def start_standby(workdir: Path, listener: socket.socket) -> tuple[trio.Process, int]:
    """A runtime waiting on a go pipe (as the root's standby); returns it and the pipe's end."""
    go_read, go_write = os.pipe()
    try:
        proc = await trio.lowlevel.open_process(
            [PY, "-c", SHIM, str(listener.fileno())],
            env=cell_env(workdir, CELL_GO_FD=str(go_read)),
            pass_fds=(listener.fileno(), go_read),
            stderr=subprocess.PIPE,
        )
    finally:
        os.close(go_read)
    return proc, go_write


async def test_runtime_standby_serves_only_after_go(workdir: Path, listener: socket.socket) -> None:
    proc, go_write = await start_standby(workdir, listener)
    try:
        # Before the go nothing accepts: the connection waits in the backlog
        # (proved by the hello not arriving while the process is alive).
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(workdir / "run" / "counter.sock"))
        client.settimeout(0.5)
        with pytest.raises(TimeoutError):
            client.recv(1)
        client.close()
        assert proc.poll() is None
        os.write(go_write, b"g")
        async with cellmesh.Synapse.grow(
            "counter", socket_path=workdir / "run" / "counter.sock"
        ) as syn:
            assert await syn.fire(Add(n=5)) == Total(total=5)
        proc.send_signal(signal.SIGTERM)
        code, err = await finish(proc)
    finally:
        os.close(go_write)
        proc.kill()
    assert code == 0, err


async def test_runtime_standby_exits_quietly_when_not_needed(
    workdir: Path, listener: socket.socket
) -> None:
    proc, go_write = await start_standby(workdir, listener)
    os.close(go_write)  # end of file: this standby will not be needed
    try:
        code, err = await finish(proc)
    finally:
        proc.kill()
    assert code == 0
    assert err == ""


@pytest.mark.parametrize("passed", ["pipe", "unbound socket", "nothing"])
def test_runtime_checks_the_inherited_listener_before_any_cell_code(
    workdir: Path, passed: str
) -> None:
    """CELL_LISTEN_FDS=1 with no listening socket at its fd is a bad env contract: exit 2
    in step 1, one line naming CELL_LISTEN_FDS, before the class is even imported."""
    (workdir / "dna" / "loud_cell.py").write_text(
        "import pathlib, os\n"
        "pathlib.Path(os.environ['CELL_DATA_DIR'], 'imported').write_text('yes')\n"
        "import cellmesh\n"
        "class Loud(cellmesh.Cell):\n"
        "    pass\n"
    )
    keep: list[Any] = []
    if passed == "pipe":
        r, w = os.pipe()
        keep += [r, w]
        fd = r
    elif passed == "unbound socket":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        keep.append(sock)
        fd = sock.fileno()
    else:
        fd = 97  # nothing open there
    try:
        result = subprocess.run(
            [PY, "-m", "cellmesh.actors.runtime"],
            env=cell_env(workdir, CELL_ENTRY="loud_cell:Loud", CELL_LISTEN_FDS_START=str(fd)),
            pass_fds=() if passed == "nothing" else (fd,),
            capture_output=True, text=True, timeout=60, check=False,
        )
    finally:
        for item in keep:
            item.close() if isinstance(item, socket.socket) else os.close(item)
    assert result.returncode == EXIT_CONFIG, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "CELL_LISTEN_FDS: " in lines[0], result.stderr
    assert f"inherited at fd {fd}" in lines[0]
    assert not (workdir / "data" / "imported").exists()  # no cell code ran

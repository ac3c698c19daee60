"""Escape tests: probes run inside a real bwrap-sandboxed child and report what they reach.

Each probe is a small Python program run as a cell; it prints one JSON object
on stdout, which the test reads from a pipe. Every negative check has a
positive control where one is meaningful (e.g. the same connect succeeds when
the network is granted), so a broken probe cannot pass by accident.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from cellmesh.config import Paths
from cellmesh.sandbox import (
    MEMORY_LIMIT_EXIT_CODE,
    CellBackend,
    CellSpec,
    Limits,
    plan_limits,
)

from .conftest import poll_until, run_probe

PY = sys.executable


CONNECT = """
import json, socket, sys
port = int(sys.argv[1]) if len(sys.argv) > 1 else {port}
try:
    s = socket.socket()  # EAFNOSUPPORT without network: the seccomp filter refuses IP
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    print(json.dumps({{"connected": True}}))
except OSError as e:
    print(json.dumps({{"connected": False, "errno": e.errno}}))
"""


def test_cannot_connect_to_host_loopback(bwrap_backend: CellBackend) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        status, out = run_probe(bwrap_backend, "netless", CONNECT.format(port=port))
        assert status.reason == "exit"
        assert out["connected"] is False
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()
        # Positive control: the very same probe reaches the listener when granted.
        status, out = run_probe(bwrap_backend, "netful", CONNECT.format(port=port), allow_net=True)
        assert out["connected"] is True
    finally:
        listener.close()


def test_only_loopback_interface(bwrap_backend: CellBackend) -> None:
    _, out = run_probe(
        bwrap_backend,
        "ifaces",
        "import json, socket; print(json.dumps(socket.if_nameindex()))",
    )
    assert out == [[1, "lo"]]  # type: ignore[comparison-overlap]


def test_cannot_write_outside_tmp_and_data(bwrap_backend: CellBackend, tmp_path: Path) -> None:
    dna = tmp_path / "dna"
    dna.mkdir()
    data = tmp_path / "data"
    targets = [
        "/", "/usr", "/etc", "/run", "/run/cell", "/cell", "/cell/dna", "/proc/sys/kernel",
        sys.prefix, sys.base_prefix, str(Path(__file__).parent), "/root", "/dev", "/dev/shm",
    ]  # fmt: skip
    code = f"""
    import json, os
    result = {{}}
    # Global (not namespaced) sysctls. (kernel/pid_max is per pid namespace
    # since Linux 6.14: writable by the cell, but only for its own namespace.)
    for f in ["/proc/sys/kernel/printk_ratelimit", "/proc/sys/vm/swappiness"]:
        try:
            current = open(f).read()  # writing the current value: harmless if it ever worked
            with open(f, "w") as fh:
                fh.write(current)
            result[f] = "written"
        except OSError as e:
            result[f] = e.strerror
    for d in {targets!r} + ["/tmp", "/cell/data", "/dev/null"]:
        try:
            with open(d if d == "/dev/null" else os.path.join(d, "escape-probe"), "w") as f:
                f.write("x")
            result[d] = "written"
        except OSError as e:
            result[d] = e.strerror
    print(json.dumps(result))
    """
    status, out = run_probe(bwrap_backend, "writer", code, dna_dir=dna, data_dir=data)
    assert status.reason == "exit"
    assert out.pop("/tmp") == "written"
    assert out.pop("/dev/null") == "written"  # device nodes still work
    assert out.pop("/cell/data") == "written"
    assert (data / "escape-probe").read_text() == "x"  # the data dir is the host's
    assert {k: v for k, v in out.items() if v == "written"} == {}
    assert not (dna / "escape-probe").exists()
    assert not Path(sys.prefix, "escape-probe").exists()


def test_cannot_see_host_home(bwrap_backend: CellBackend) -> None:
    marker = Path.home() / f".cellmesh-escape-marker-{uuid.uuid4().hex}"
    marker.write_text("host secret")
    try:
        code = f"""
        import json, os
        home = {str(Path.home())!r}
        print(json.dumps({{
            "marker": os.path.exists({str(marker)!r}),
            "home_entries": sorted(os.listdir(home)) if os.path.isdir(home) else [],
            "HOME": os.environ["HOME"],
        }}))
        """
        _, out = run_probe(bwrap_backend, "homeless", code)
    finally:
        marker.unlink()
    assert out["marker"] is False
    assert out["HOME"] == "/tmp"
    # Only path components of the bound Python runtime may show under the home.
    from cellmesh.sandbox._bwrap import runtime_paths

    allowed = {
        p.relative_to(Path.home()).parts[0]
        for p in runtime_paths()
        if p.is_relative_to(Path.home())
    }
    assert set(out["home_entries"]) <= allowed  # type: ignore[arg-type]


def test_cannot_see_other_cells_data_or_sockets(
    bwrap_backend: CellBackend, tmp_path: Path, paths: Paths
) -> None:
    other = tmp_path / "data-b"
    other.mkdir()
    (other / "ledger.wal").write_text("other cell's state")
    mine = tmp_path / "data-a"
    paths.socket_dir.mkdir(parents=True)
    socks = []
    for name in ("cell-a", "cell-b", "peer"):
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(paths.socket_path(name)))
        s.listen()
        # Cells run as an unprivileged uid: membrane sockets are 0666, the
        # 0700 socket directory is what keeps other host users out.
        os.chmod(paths.socket_path(name), 0o666)
        socks.append(s)
    code = f"""
    import json, os, socket
    def can_connect(p):
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(p)
            return True
        except OSError:
            return False
    print(json.dumps({{
        "other_data": os.path.exists({str(other / "ledger.wal")!r}),
        "my_data": sorted(os.listdir("/cell/data")),
        "run_cell": sorted(os.listdir("/run/cell")),
        "host_socket_dir": os.path.exists({str(paths.socket_dir)!r}),
        "peer": can_connect("/run/cell/peer.sock"),
        "own": can_connect("/run/cell/cell-a.sock"),
    }}))
    """
    try:
        _, out = run_probe(
            bwrap_backend,
            "cell-a",
            code,
            data_dir=mine,
            own_socket=paths.socket_path("cell-a"),
            granted_sockets=[paths.socket_path("peer")],
        )
    finally:
        for s in socks:
            s.close()
    assert out == {
        "other_data": False,
        "my_data": [],
        "run_cell": ["cell-a.sock", "peer.sock"],  # not cell-b.sock
        "host_socket_dir": False,
        "peer": True,
        "own": True,
    }


def test_cannot_see_host_processes(bwrap_backend: CellBackend) -> None:
    code = """
    import json, os
    pids = [p for p in os.listdir("/proc") if p.isdigit()]
    cmds = [open(f"/proc/{p}/cmdline", "rb").read().replace(b"\\0", b" ").decode() for p in pids]
    print(json.dumps({"pids": pids, "cmds": cmds, "me": os.getpid()}))
    """
    _, out = run_probe(bwrap_backend, "pidns", code)
    assert len(out["pids"]) <= 2  # type: ignore[arg-type]  # bwrap's init and the probe
    assert not any("pytest" in c for c in out["cmds"])  # type: ignore[union-attr]
    assert out["me"] <= 2  # type: ignore[operator]


def test_identity_capabilities_and_hostname(bwrap_backend: CellBackend) -> None:
    code = """
    import json, os, socket
    status = dict(l.split(":\\t", 1) for l in open("/proc/self/status").read().splitlines())
    try:
        os.unshare(os.CLONE_NEWUSER) if hasattr(os, "unshare") else None
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        nested = libc.unshare(0x10000000) == 0
    except OSError:
        nested = False
    print(json.dumps({
        "uid": os.getuid(), "gid": os.getgid(), "host": socket.gethostname(),
        "capeff": status["CapEff"].strip(), "capbnd": status["CapBnd"].strip(),
        "nnp": status["NoNewPrivs"].strip(), "nested_userns": nested,
    }))
    """
    _, out = run_probe(bwrap_backend, "ident", code)
    assert out == {
        "uid": 1000,
        "gid": 1000,
        "host": "cell-ident",
        "capeff": "0000000000000000",
        "capbnd": "0000000000000000",
        "nnp": "1",
        "nested_userns": False,
    }


def test_runs_as_an_unprivileged_host_uid_when_root(
    bwrap_backend: CellBackend, bwrap_host_uid: int | None
) -> None:
    """As root, the cell's host credentials are an unprivileged uid's of the cells' range,
    not root's (caps or not)."""
    from cellmesh.sandbox._uids import DEFAULT_UID_RANGE

    from .conftest import workload_pid

    if os.geteuid() == 0 and bwrap_host_uid is None:
        pytest.skip("bwrap cannot run as an unprivileged uid here (no unprivileged userns)")
    bwrap_backend.create(CellSpec(name="whoami", argv=[PY, "-c", "import time; time.sleep(60)"]))
    proc = bwrap_backend.spawn("whoami")
    pid = workload_pid(bwrap_backend, proc.pid)
    uids = Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split("\n")[0].split()
    assert len(set(uids)) == 1 and len(uids) == 4  # real, effective, saved, filesystem
    if os.geteuid() == 0:
        assert DEFAULT_UID_RANGE[0] <= int(uids[0]) <= DEFAULT_UID_RANGE[1]
    else:
        assert int(uids[0]) == os.geteuid()


PARENT = """
import os, sys
from pathlib import Path
from cellmesh.config import Paths
from cellmesh.sandbox import select_backend, CellSpec
be = select_backend({"CELL_SANDBOX": "bwrap"}, paths=Paths.from_env({"CELL_HOME": sys.argv[1]}))
argv = [sys.executable, "-c", "import time; time.sleep(300)", sys.argv[2]]
be.create(CellSpec(name="orphan", argv=argv))
proc = be.spawn("orphan")
print(proc.pid, be.tracked()["orphan"].runtime_dir, flush=True)
sys.stdin.read()
"""


def _pids_with(token: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        # The workload itself: not the parent (select_backend) nor bwrap.
        if cmd.startswith(PY.encode()) and token.encode() in cmd and b"select_backend" not in cmd:
            found.append(int(entry))
    return found


def test_dies_when_parent_dies(bwrap_path: str, tmp_path: Path) -> None:
    token = f"orphan-{uuid.uuid4().hex}"
    parent = subprocess.Popen(
        [PY, "-c", PARENT, str(tmp_path), token],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    runtime_dir = ""
    try:
        assert parent.stdout is not None
        pid, runtime_dir = parent.stdout.readline().decode().split()
        assert int(pid)
        # Kill the parent only once the workload runs inside the sandbox.
        poll_until(lambda: _pids_with(token), what="the sandboxed child to start")
        parent.kill()
        parent.wait(30)
        poll_until(lambda: not _pids_with(token), what="the orphaned cell to die")
    finally:
        parent.kill()
        parent.wait(30)
        for leftover in _pids_with(token):
            os.kill(leftover, signal.SIGKILL)
        # The dead parent never destroyed its cell: remove its runtime dir.
        if runtime_dir:
            shutil.rmtree(runtime_dir, ignore_errors=True)


MEMORY_HOG = f"""
import json, os
small = bytearray(16 << 20)  # well under the limit: must succeed
print(json.dumps({{"small": len(small)}}), flush=True)
try:
    big = bytearray(768 << 20)
except MemoryError:
    os._exit({MEMORY_LIMIT_EXIT_CODE})
print(json.dumps({{"small": len(small), "big": len(big)}}), flush=True)
"""


def test_stopped_at_its_memory_limit(real_backend: CellBackend) -> None:
    status, out = run_probe(real_backend, "hog", MEMORY_HOG, limits=Limits(memory=256 << 20))
    assert out == {"small": 16 << 20}
    assert (status.reason, status.limit) == ("limit", "memory")


def test_without_a_limit_the_same_allocation_succeeds(real_backend: CellBackend) -> None:
    status, out = run_probe(real_backend, "nohog", MEMORY_HOG)
    assert status.reason == "exit"
    assert out == {"small": 16 << 20, "big": 768 << 20}


FORK_BOMB = """
import errno, json, os
r, w = os.pipe()
kids, err = [], None
for _ in range(200):  # hard upper bound even if no limit held
    try:
        pid = os.fork()
    except OSError as e:
        err = e.errno
        break
    if pid == 0:
        os.close(w)
        os.read(r, 1)  # parked until the parent closes w
        os._exit(0)
    kids.append(pid)
os.close(w)
for k in kids:
    os.waitpid(k, 0)
print(json.dumps({"forked": len(kids), "errno": err}))
"""


def test_fork_bomb_stays_bounded(bwrap_backend: CellBackend) -> None:
    from cellmesh.sandbox import CgroupHost

    limits = Limits(pids=16)
    plan = plan_limits(limits, CgroupHost.detect({}))
    if plan.mechanisms["pids"] == "none":
        pytest.skip("no pids controller (cgroup v2 or v1) is writable on this host")
    status, out = run_probe(bwrap_backend, "bomb", FORK_BOMB, limits=limits)
    assert status.reason == "exit"
    assert out["errno"] == errno.EAGAIN
    assert 0 < out["forked"] < 16  # type: ignore[operator]


def test_existing_data_is_handed_to_the_cell(bwrap_backend: CellBackend, tmp_path: Path) -> None:
    data = tmp_path / "ledger"
    (data / "wal").mkdir(parents=True)
    (data / "wal" / "seg-0").write_text("old")
    code = """
    import json
    with open("/cell/data/wal/seg-0", "a") as f:
        f.write("+new")
    print(json.dumps({"ok": True}))
    """
    status, out = run_probe(bwrap_backend, "ledger", code, data_dir=data)
    assert (status.reason, out) == ("exit", {"ok": True})
    assert (data / "wal" / "seg-0").read_text() == "old+new"


def test_destroy_right_after_spawn_leaves_no_process(bwrap_backend: CellBackend) -> None:
    """Stopping a sandbox that is still being set up must take all of it down."""
    token = f"early-{uuid.uuid4().hex}"
    argv = [PY, "-c", "import time; time.sleep(120)", token]
    for i in range(10):
        bwrap_backend.create(CellSpec(name=f"early{i}", argv=argv))
        bwrap_backend.spawn(f"early{i}")
        bwrap_backend.destroy(f"early{i}", grace=0.2)

    def leftovers() -> list[int]:
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if token.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                        found.append(int(entry))
                except OSError:
                    continue
        return found

    try:
        poll_until(lambda: not leftovers(), timeout=5, what="every early sandbox to be gone")
    finally:
        for pid in leftovers():
            os.kill(pid, signal.SIGKILL)


DAEMONIZE = """
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        code = "import time; time.sleep(120)"
        os.execv(sys.executable, [sys.executable, "-c", code, sys.argv[1]])
    os._exit(0)
os.wait()
print("daemonized", flush=True)
if sys.argv[2] == "stay":
    time.sleep(120)
"""


def _token_pids(token: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if token.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                continue
    return found


@pytest.mark.parametrize("main", ["exits", "stay"])
def test_a_daemonized_child_does_not_outlive_the_cell(
    bwrap_backend: CellBackend, main: str
) -> None:
    token = f"daemon-{uuid.uuid4().hex}"
    r, w = os.pipe()
    bwrap_backend.create(CellSpec(name="forker", argv=[PY, "-c", DAEMONIZE, token, main]))
    try:
        bwrap_backend.spawn("forker", stdout=w)
        os.close(w)
        w = -1
        assert os.read(r, 64) == b"daemonized\n"
        if main == "exits":
            assert bwrap_backend.wait("forker", timeout=60).reason == "exit"
        bwrap_backend.destroy("forker", grace=5)
        poll_until(lambda: not _token_pids(token), timeout=10, what="the daemon to die")
    finally:
        if w >= 0:
            os.close(w)
        os.close(r)
        for pid in _token_pids(token):
            os.kill(pid, signal.SIGKILL)

"""One contract suite, run against every backend (stub, host, bwrap)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from cellmesh.config import Paths
from cellmesh.sandbox import (
    CellBackend,
    CellRunning,
    CellSpec,
    DuplicateCell,
    ExitStatus,
    MemorySecretBroker,
    SandboxConfigError,
    SecretRef,
    StubBackend,
    UnknownCell,
    read_events,
)

PY = sys.executable


def spec(name: str, *argv: str, **kw: object) -> CellSpec:
    return CellSpec(name=name, argv=argv or (PY, "-c", "pass"), **kw)  # type: ignore[arg-type]


def test_create_rejects_empty_id(backend: CellBackend) -> None:
    with pytest.raises(SandboxConfigError):
        backend.create(CellSpec(name="a", argv=[PY], cell_id=""))
    assert dict(backend.tracked()) == {}


def test_create_rejects_duplicate_live_id(backend: CellBackend) -> None:
    backend.create(spec("dup"))
    with pytest.raises(DuplicateCell):
        backend.create(spec("dup"))
    assert list(backend.tracked()) == ["dup"]


def test_create_rejects_empty_argv(backend: CellBackend) -> None:
    with pytest.raises(SandboxConfigError):
        backend.create(CellSpec(name="a", argv=[]))


def test_destroy_rejects_unknown_and_repeated_id(backend: CellBackend) -> None:
    with pytest.raises(UnknownCell):
        backend.destroy("ghost")
    backend.create(spec("once"))
    report = backend.destroy("once")
    assert report.tracked_after == 0
    with pytest.raises(UnknownCell):
        backend.destroy("once")


def test_tracked_view_counts_live_cells(backend: CellBackend) -> None:
    backend.create(spec("a"))
    backend.create(spec("b"))
    assert set(backend.tracked()) == {"a", "b"}
    assert backend.tracked()["a"].backend == backend.name
    assert backend.destroy("a").tracked_after == 1
    assert set(backend.tracked()) == {"b"}


def test_id_is_free_again_after_destroy(backend: CellBackend) -> None:
    backend.create(spec("again"))
    backend.destroy("again")
    backend.create(spec("again"))
    assert "again" in backend.tracked()


def test_two_versions_of_a_cell_can_overlap(backend: CellBackend) -> None:
    backend.create(spec("ledger", cell_id="ledger-v1"))
    backend.create(spec("ledger", cell_id="ledger-v2"))
    assert set(backend.tracked()) == {"ledger-v1", "ledger-v2"}


def test_spawn_and_wait_reports_exit(backend: CellBackend) -> None:
    backend.create(spec("ok"))
    proc = backend.spawn("ok")
    assert proc.pid > 0
    status = backend.wait("ok", timeout=60)
    assert status == ExitStatus(code=0, signal=None, reason="exit")
    assert backend.wait("ok") == status  # idempotent once reaped


def test_nonzero_exit_is_a_crash(backend: CellBackend) -> None:
    backend.create(spec("bad", PY, "-c", "raise SystemExit(3)"))
    if isinstance(backend, StubBackend):
        backend.program_exit("bad", ExitStatus(code=3, signal=None, reason="crash"))
    backend.spawn("bad")
    status = backend.wait("bad", timeout=60)
    assert (status.code, status.signal, status.reason) == (3, None, "crash")


def test_spawn_while_running_is_refused(backend: CellBackend) -> None:
    backend.create(spec("busy", PY, "-c", "import time; time.sleep(60)"))
    backend.spawn("busy")
    with pytest.raises(CellRunning):
        backend.spawn("busy")


def test_restart_after_exit(backend: CellBackend) -> None:
    backend.create(spec("again"))
    backend.spawn("again")
    backend.wait("again", timeout=60)
    backend.spawn("again")
    assert backend.wait("again", timeout=60).reason == "exit"


def test_destroy_stops_a_running_cell(backend: CellBackend) -> None:
    backend.create(spec("sleepy", PY, "-c", "import time; time.sleep(120)"))
    backend.spawn("sleepy")
    report = backend.destroy("sleepy", grace=10)
    assert report.exit is not None
    assert report.exit.reason == "stop"
    assert report.clean  # SIGTERM was enough


def test_destroy_forces_a_cell_that_ignores_sigterm(backend: CellBackend) -> None:
    if isinstance(backend, StubBackend):
        pytest.skip("the stub has no process to ignore signals")
    code = (
        "import signal, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); import time; time.sleep(120)"
    )
    backend.create(spec("stubborn", PY, "-c", code))
    import os

    r, w = os.pipe()
    try:
        backend.spawn("stubborn", stdout=w)
        os.close(w)
        w = -1
        assert os.read(r, 6) == b"ready\n"
    finally:
        if w >= 0:
            os.close(w)
        os.close(r)
    report = backend.destroy("stubborn", grace=0.5)
    assert not report.clean
    assert report.exit is not None and report.exit.reason == "stop"


def test_destroy_removes_every_host_side_trace(backend: CellBackend, paths: Paths) -> None:
    paths.socket_dir.mkdir(parents=True, exist_ok=True)
    sock_path = paths.socket_path("traced")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock_path))
    try:
        handle = backend.create(spec("traced", own_socket=sock_path))
        backend.spawn("traced")
        backend.wait("traced", timeout=60)
        report = backend.destroy("traced")
    finally:
        listener.close()
    if isinstance(backend, StubBackend):
        return
    assert not sock_path.exists()
    assert str(sock_path) in report.removed
    assert handle.runtime_dir is not None and not handle.runtime_dir.exists()
    for leaf in handle.cgroup_paths:
        assert not leaf.exists()


def test_destroy_revokes_secrets(backend: CellBackend, broker: MemorySecretBroker) -> None:
    broker.put("api", b"token-123")
    backend.create(spec("sec", secrets=[SecretRef(name="API", key="api")]))
    backend.spawn("sec")
    backend.wait("sec", timeout=60)
    assert broker.held_for("sec") == ("api",)
    backend.spawn("sec")  # a restart resolves afresh and revokes the old copy
    backend.wait("sec", timeout=60)
    assert broker.held_for("sec") == ("api",)
    report = backend.destroy("sec")
    assert report.secrets_revoked == 1
    assert broker.held_for("sec") == ()


def test_lifecycle_events_are_recorded(backend: CellBackend, paths: Paths) -> None:
    backend.create(spec("evt"))
    backend.spawn("evt")
    backend.wait("evt", timeout=60)
    backend.destroy("evt")
    events = read_events(paths.log_dir / "evt.events.jsonl")
    assert [e["event"] for e in events] == ["started", "exited", "destroyed"]
    assert events[1]["reason"] == "exit"
    assert events[2]["clean"] is True
    assert all(e["backend"] == backend.name for e in events)


def test_lifecycle_events_are_filed_under_the_log_name(
    backend: CellBackend, paths: Paths
) -> None:
    """Replicas share CELL_NAME but not their logs: events go to ``<log_name>.events.jsonl``."""
    backend.create(spec("grp", log_name="grp..1", cell_id="grp..1"))
    backend.spawn("grp..1")
    backend.wait("grp..1", timeout=60)
    backend.destroy("grp..1")
    events = read_events(paths.log_dir / "grp..1.events.jsonl")
    assert [e["event"] for e in events] == ["started", "exited", "destroyed"]
    assert all(e["cell_id"] == "grp..1" for e in events)
    assert not (paths.log_dir / "grp.events.jsonl").exists()


async def test_wait_async_from_trio(backend: CellBackend) -> None:
    backend.create(spec("async"))
    backend.spawn("async")
    status = await backend.wait_async("async")
    assert status.reason == "exit"


def test_unknown_id_is_rejected_by_spawn_and_wait(backend: CellBackend) -> None:
    with pytest.raises(UnknownCell):
        backend.spawn("nope")
    with pytest.raises(UnknownCell):
        backend.wait("nope")


def test_create_rejects_a_non_socket_as_socket(backend: CellBackend, tmp_path: Path) -> None:
    if isinstance(backend, StubBackend):
        pytest.skip("the stub does not touch the filesystem")
    regular = tmp_path / "file.sock"
    regular.write_text("")
    with pytest.raises(SandboxConfigError):
        backend.create(spec("x", own_socket=regular))


def test_create_rejects_a_missing_dna_dir(backend: CellBackend, tmp_path: Path) -> None:
    if isinstance(backend, StubBackend):
        pytest.skip("the stub does not touch the filesystem")
    with pytest.raises(SandboxConfigError):
        backend.create(spec("x", dna_dir=tmp_path / "absent"))
    assert dict(backend.tracked()) == {}


def test_hot_swap_keeps_the_shared_socket(backend: CellBackend, paths: Paths) -> None:
    if isinstance(backend, StubBackend):
        pytest.skip("the stub does not touch the filesystem")
    paths.socket_dir.mkdir(parents=True, exist_ok=True)
    sock_path = paths.socket_path("swapped")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock_path))
    try:
        backend.create(spec("swapped", cell_id="swapped-v1", own_socket=sock_path))
        backend.create(spec("swapped", cell_id="swapped-v2", own_socket=sock_path))
        assert str(sock_path) not in backend.destroy("swapped-v1").removed
        assert sock_path.exists()
        assert str(sock_path) in backend.destroy("swapped-v2").removed
        assert not sock_path.exists()
    finally:
        listener.close()


def test_event_write_failures_never_break_the_lifecycle(tmp_path: Path) -> None:
    from cellmesh.sandbox import JsonlEventLog

    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    log = JsonlEventLog(log_dir=blocked / "logs")
    be = StubBackend(events=log)
    be.create(spec("quiet"))
    be.spawn("quiet")
    be.wait("quiet")
    assert be.destroy("quiet").tracked_after == 0
    assert log.dropped == 3
    assert isinstance(log.last_error, OSError)


def test_terminate_stops_the_process_but_keeps_the_cell(backend: CellBackend) -> None:
    backend.create(spec("term", PY, "-c", "import time; time.sleep(60)"))
    backend.spawn("term")
    assert backend.process_id("term") is not None
    backend.terminate("term")
    status = backend.wait("term", timeout=30)
    assert status.reason == "stop"
    assert backend.process_id("term") is None
    assert "term" in backend.tracked()
    backend.spawn("term")  # the cell can be started again: that is a restart
    backend.kill("term")
    assert backend.wait("term", timeout=30).reason == "stop"


def test_kill_as_crash_is_reported_as_a_crash(backend: CellBackend) -> None:
    backend.create(spec("victim", PY, "-c", "import time; time.sleep(60)"))
    backend.spawn("victim")
    backend.kill("victim", as_crash=True)
    status = backend.wait("victim", timeout=30)
    assert status.reason == "crash"
    assert status.signal == 9


def test_terminate_and_kill_are_noops_when_not_running(backend: CellBackend) -> None:
    backend.create(spec("idle"))
    backend.terminate("idle")
    backend.kill("idle")
    assert backend.process_id("idle") is None
    with pytest.raises(UnknownCell):
        backend.kill("ghost")

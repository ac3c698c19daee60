"""Fixtures for the sandbox tests: isolated CELL_HOME, backends, bwrap availability."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cellmesh.config import Paths
from cellmesh.sandbox import (
    BwrapBackend,
    CellBackend,
    CellSpec,
    CgroupHost,
    ExitStatus,
    HostBackend,
    JsonlEventLog,
    MemorySecretBroker,
    StubBackend,
)
from cellmesh.sandbox._bwrap import find_bwrap, probe_bwrap
from cellmesh.sandbox._uids import DEFAULT_UID_RANGE, UidPool

PY = sys.executable


def _install_bwrap() -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "bubblewrap"]):
        subprocess.run(argv, env=env, capture_output=True, timeout=300, check=False)


@pytest.fixture(scope="session")
def bwrap_host_uid(bwrap_path: str) -> int | None:
    """The host uid bwrap cells run as here (nobody when root, if bwrap can run as it)."""
    from cellmesh.sandbox._bwrap import default_host_uid

    uid = default_host_uid()
    if uid is not None and probe_bwrap(bwrap_path, run_as=uid) is not None:
        return None
    return uid


@pytest.fixture(scope="session")
def bwrap_path() -> str:
    """bwrap's path; installs it (root + apt) when missing, else skips with the reason."""
    if find_bwrap() is None:
        _install_bwrap()
    path = find_bwrap()
    problem = probe_bwrap(path)
    if problem is not None or path is None:
        pytest.skip(f"bwrap sandbox unavailable: {problem}")
    return path


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    home = tmp_path / "cellhome"
    home.mkdir()
    return Paths.from_env({"CELL_HOME": str(home)})


@pytest.fixture
def broker() -> MemorySecretBroker:
    return MemorySecretBroker()


def make_backend(
    kind: str,
    paths: Paths,
    broker: MemorySecretBroker,
    bwrap: str | None = None,
    host_uid: int | None = None,
) -> CellBackend:
    events = JsonlEventLog.for_paths(paths)
    cgroups = CgroupHost.detect({})
    if kind == "stub":
        return StubBackend(events=events, broker=broker)
    if kind == "host":
        return HostBackend(paths, events, broker, cgroups)
    assert bwrap is not None
    if host_uid is not None and os.geteuid() == 0:
        # As select_backend does for a root running as root: a uid of its own per cell.
        return BwrapBackend(paths, events, broker, cgroups, bwrap=bwrap, host_uid=None,
                            uids=UidPool(*DEFAULT_UID_RANGE))
    return BwrapBackend(paths, events, broker, cgroups, bwrap=bwrap, host_uid=host_uid)


@pytest.fixture(params=["stub", "host", "bwrap"])
def backend(
    request: pytest.FixtureRequest, paths: Paths, broker: MemorySecretBroker
) -> Iterator[CellBackend]:
    bwrap = request.getfixturevalue("bwrap_path") if request.param == "bwrap" else None
    uid = request.getfixturevalue("bwrap_host_uid") if request.param == "bwrap" else None
    be = make_backend(request.param, paths, broker, bwrap, uid)
    yield be
    for cell_id in list(be.tracked()):
        be.destroy(cell_id, grace=0.5)


@pytest.fixture(params=["host", "bwrap"])
def real_backend(
    request: pytest.FixtureRequest, paths: Paths, broker: MemorySecretBroker
) -> Iterator[CellBackend]:
    bwrap = request.getfixturevalue("bwrap_path") if request.param == "bwrap" else None
    uid = request.getfixturevalue("bwrap_host_uid") if request.param == "bwrap" else None
    be = make_backend(request.param, paths, broker, bwrap, uid)
    yield be
    for cell_id in list(be.tracked()):
        be.destroy(cell_id, grace=0.5)


@pytest.fixture
def bwrap_backend(
    bwrap_path: str, bwrap_host_uid: int | None, paths: Paths, broker: MemorySecretBroker
) -> Iterator[CellBackend]:
    be = make_backend("bwrap", paths, broker, bwrap_path, bwrap_host_uid)
    yield be
    for cell_id in list(be.tracked()):
        be.destroy(cell_id, grace=0.5)


def poll_until(predicate: object, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate()`` until true, failing after ``timeout`` seconds."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def workload_pid(backend: CellBackend, pid: int) -> int:
    """The pid of the workload itself: ``pid`` (host) or the innermost descendant (bwrap)."""
    if backend.name != "bwrap":
        return pid
    from cellmesh.sandbox._bwrap import descendants

    found: list[int] = []

    def leaf() -> bool:
        found[:] = descendants(pid)
        return len(found) >= 2

    poll_until(leaf, what="the sandboxed workload to start")
    return found[-1]


def run_probe(
    backend: CellBackend, name: str, code: str, *, timeout: float = 120.0, **spec_kw: object
) -> tuple[ExitStatus, dict[str, object]]:
    """Run ``code`` as cell ``name``; return its status and the last JSON line it printed."""
    r, w = os.pipe()
    backend.create(
        CellSpec(name=name, argv=[PY, "-c", textwrap.dedent(code)], **spec_kw)  # type: ignore[arg-type]
    )
    try:
        backend.spawn(name, stdout=w, stderr=2)
        os.close(w)
        w = -1
        chunks = []
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
        status = backend.wait(name, timeout=timeout)
    finally:
        if w >= 0:
            os.close(w)
        os.close(r)
        backend.destroy(name, grace=1)
    out = b"".join(chunks).decode()
    data = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    return status, data

"""Limit planning (which mechanism enforces what) and real cgroup leaves."""

from __future__ import annotations

import os
import resource
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from cellmesh.config import Paths
from cellmesh.sandbox import (
    CellSpec,
    CgroupHost,
    HostBackend,
    Limits,
    MemoryEventLog,
    MemorySecretBroker,
    SandboxConfigError,
    plan_limits,
)
from cellmesh.sandbox._limits import AS_HEADROOM, sanitize_name

PY = sys.executable
ALL = Limits(memory=128 << 20, cpu=0.5, pids=32, open_files=100)


def fake_host(v2: set[str] | None = None, v1: set[str] = frozenset()) -> CgroupHost:  # type: ignore[assignment]
    return CgroupHost(
        v2_mount=Path("/sys/fs/cgroup"),
        v2_parent=None if v2 is None else Path("/sys/fs/cgroup/cells"),
        v2_parent_problem=None if v2 is not None else "not set",
        v2_controllers=frozenset(v2 or ()),
        v2_root_controllers=frozenset(v2 or ()),
        v1_dirs={c: Path(f"/sys/fs/cgroup/{c}") for c in v1},
    )


def test_plan_prefers_cgroup2() -> None:
    plan = plan_limits(ALL, fake_host(v2={"memory", "cpu", "pids"}, v1={"pids", "cpu"}))
    assert plan.mechanisms == {
        "memory": "cgroup2", "cpu": "cgroup2", "pids": "cgroup2", "open_files": "rlimit",
    }  # fmt: skip
    assert plan.v2_files == {
        "memory.max": str(128 << 20),
        "memory.swap.max": "0",
        "cpu.max": "50000 100000",
        "pids.max": "32",
    }
    assert plan.rlimits == {resource.RLIMIT_NOFILE: 100}


def test_plan_falls_back_to_cgroup1_then_rlimit_then_none() -> None:
    plan = plan_limits(ALL, fake_host(v1={"pids"}))
    assert plan.mechanisms == {
        "memory": "rlimit", "cpu": "none", "pids": "cgroup1", "open_files": "rlimit",
    }  # fmt: skip
    assert plan.rlimits == {
        resource.RLIMIT_DATA: 128 << 20,
        resource.RLIMIT_AS: (128 << 20) + AS_HEADROOM,  # the backstop for shared memory
        resource.RLIMIT_FSIZE: 128 << 20,  # no memfd (or file) past the limit
        resource.RLIMIT_NOFILE: 100,
    }
    assert plan.v1_files == {"pids": {"pids.max": "32"}}
    bare = plan_limits(ALL, fake_host())
    assert bare.mechanisms["pids"] == "none"
    assert plan_limits(Limits(), fake_host()).mechanisms == {}


def test_sanitize_name() -> None:
    assert sanitize_name("ledger.v2/x y") == "ledger_v2_x_y"


def test_cgroup_parent_must_be_absolute() -> None:
    with pytest.raises(SandboxConfigError):
        CgroupHost.detect({"CELL_CGROUP_PARENT": "relative/path"})


def test_cgroup_parent_outside_cgroupfs_is_reported_not_used(tmp_path: Path) -> None:
    host = CgroupHost.detect({"CELL_CGROUP_PARENT": str(tmp_path)})
    assert host.v2_parent is None
    assert host.v2_parent_problem is not None


@pytest.fixture
def v2_parent() -> Iterator[Path]:
    """A fresh cgroup v2 directory we may create leaves under (root only)."""
    mount = CgroupHost.detect({}).v2_mount
    if mount is None:
        pytest.skip("no cgroup2 filesystem mounted")
    parent = mount / f"cellmesh-test-{uuid.uuid4().hex[:12]}"
    try:
        parent.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot create a cgroup v2 directory under {mount}: {exc}")
    yield parent
    parent.rmdir()


def test_cgroup2_leaf_is_joined_before_exec_and_removed(v2_parent: Path, paths: Paths) -> None:
    host = CgroupHost.detect({"CELL_CGROUP_PARENT": str(v2_parent)})
    assert host.v2_parent == v2_parent
    be = HostBackend(paths, MemoryEventLog(), MemorySecretBroker(), host)
    handle = be.create(
        CellSpec(name="leafy", argv=[PY, "-c", "print(open('/proc/self/cgroup').read())"])
    )
    leaf = handle.cgroup_paths[0]
    assert leaf.parent == v2_parent
    assert leaf.name.startswith(f"cellmesh_{paths.owner_tag}_leafy_")
    r, w = os.pipe()
    be.spawn("leafy", stdout=w)
    os.close(w)
    assert be.wait("leafy", timeout=60).reason == "exit"
    text = os.read(r, 65536).decode()
    os.close(r)
    rel = "/" + str(leaf.relative_to(host.v2_mount))  # type: ignore[arg-type]
    assert f"0::{rel}" in text.splitlines()
    be.destroy("leafy")
    assert not leaf.exists()
    assert not [p for p in v2_parent.iterdir() if p.is_dir()]  # no leaf left behind


def test_sweep_kills_and_removes_stale_leaves_only(v2_parent: Path) -> None:
    from cellmesh.sandbox import WorkloadEnv, spawn_isolated_workload, sweep_stale_leaves

    # Only the test's own v2 parent: this process's v1 cgroups hold the leaves of every
    # other mesh running on this machine (another test, a demo), which must live on.
    host = attrs.evolve(CgroupHost.detect({"CELL_CGROUP_PARENT": str(v2_parent)}), v1_dirs={})
    stale = v2_parent / "cellmesh_ghost_0123"
    live = v2_parent / "cellmesh_live_4567"
    other = v2_parent / "not-ours"
    for path in (stale, live, other):
        path.mkdir()
    orphan = spawn_isolated_workload(
        [PY, "-c", "import time; time.sleep(120)"],
        WorkloadEnv(),
        cgroup_procs=[stale / "cgroup.procs"],
    )
    try:
        removed = sweep_stale_leaves(host, keep=[live])
        assert removed == [str(stale)]
        assert orphan.wait(30) == -9
        assert live.exists() and other.exists()
    finally:
        orphan.send_signal(9)
        orphan.wait(30)
        orphan.close()
        for path in (stale, live, other):
            if path.exists():
                path.rmdir()


def test_backend_sweeps_what_a_crashed_backend_of_its_socket_dir_left_and_nothing_else(
    v2_parent: Path, paths: Paths, tmp_path: Path
) -> None:
    """A root killed outright leaves its cells' cgroup leaves and runtime dirs; the
    next backend of the same socket dir removes them (and kills what they hold),
    while another socket dir's (another root's) and its own live ones stay."""
    host = attrs.evolve(CgroupHost.detect({"CELL_CGROUP_PARENT": str(v2_parent)}), v1_dirs={})
    other_paths = attrs.evolve(paths, socket_dir=tmp_path / "other-run")
    assert other_paths.owner_tag != paths.owner_tag
    crashed = HostBackend(paths, MemoryEventLog(), MemorySecretBroker(), host)
    other = HostBackend(other_paths, MemoryEventLog(), MemorySecretBroker(), host)
    sleeper = [PY, "-c", "import time; time.sleep(120)"]
    lost = crashed.create(CellSpec(name="lost", argv=sleeper))
    crashed.spawn("lost")
    kept = other.create(CellSpec(name="kept", argv=sleeper))
    other.spawn("kept")
    try:
        # The crashed root's backend is never destroyed; the next one starts.
        successor = HostBackend(paths, MemoryEventLog(), MemorySecretBroker(), host)
        mine = successor.create(CellSpec(name="mine", argv=[PY, "-c", "pass"]))
        removed = successor.sweep_stale()
        assert sorted(removed) == sorted(
            [str(p) for p in lost.cgroup_paths] + [str(lost.runtime_dir)]
        )
        crashed.wait("lost", timeout=30)  # killed by the sweep (else TimeoutError)
        assert not lost.runtime_dir.exists()
        for handle in (kept, mine):  # another root's cell, and the successor's own
            assert handle.runtime_dir is not None and handle.runtime_dir.is_dir()
            assert all(path.is_dir() for path in handle.cgroup_paths)
        assert other.process_id("kept") is not None
        successor.destroy("mine")
    finally:
        other.destroy("kept")
        crashed.destroy("lost")


def test_bwrap_cell_and_all_its_processes_live_in_the_leaf(
    v2_parent: Path, paths: Paths, bwrap_path: str, bwrap_host_uid: int | None
) -> None:
    from cellmesh.sandbox import BwrapBackend
    from cellmesh.sandbox._bwrap import descendants

    host = CgroupHost.detect({"CELL_CGROUP_PARENT": str(v2_parent)})
    be = BwrapBackend(
        paths,
        MemoryEventLog(),
        MemorySecretBroker(),
        host,
        bwrap=bwrap_path,
        host_uid=bwrap_host_uid,
    )
    handle = be.create(CellSpec(name="leafy", argv=[PY, "-c", "import time; time.sleep(60)"]))
    leaf = handle.cgroup_paths[0]
    proc = be.spawn("leafy")
    try:
        from .conftest import poll_until

        poll_until(lambda: len(descendants(proc.pid)) >= 2, what="the sandboxed workload")
        members = {int(p) for p in (leaf / "cgroup.procs").read_text().split()}
        assert {proc.pid, *descendants(proc.pid)} <= members  # bwrap, its init, the workload
    finally:
        be.destroy("leafy", grace=1)
    assert not leaf.exists()



def test_a_limit_above_the_spawners_hard_limit_is_raised_or_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An audit's manifest asked for open_files = 65536 under a root whose hard limit was
    20000: `up` failed with "Exception occurred in preexec_fn". A process that may raise
    its hard limit (CAP_SYS_RESOURCE) raises it in the child before the uid drop;
    one that may not is told which limit, before anything starts."""
    import resource

    from cellmesh.sandbox import SandboxConfigError, WorkloadEnv, _spawn, spawn_isolated_workload

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY or hard >= 1 << 20:
        pytest.skip("the descriptor hard limit is already the kernel's ceiling")
    argv = [PY, "-c", "import resource; assert resource.getrlimit(resource.RLIMIT_NOFILE)"
            f"[1] == {hard + 1}"]
    if _spawn.may_raise_limits():
        child = spawn_isolated_workload(argv, WorkloadEnv(),
                                        rlimits={resource.RLIMIT_NOFILE: hard + 1})
        try:
            assert child.wait(30) == 0
        finally:
            child.close()
    monkeypatch.setattr(_spawn, "may_raise_limits", lambda: False)
    with pytest.raises(SandboxConfigError, match=r"^open_files: \d+ is above this process's "
                       r"hard limit \(\d+\), which it may not raise \(no CAP_SYS_RESOURCE\)"):
        spawn_isolated_workload(argv, WorkloadEnv(), rlimits={resource.RLIMIT_NOFILE: hard + 1})

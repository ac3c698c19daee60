"""One host uid per cell (``cellmesh.sandbox._uids``): the pool, and what it stops.

The kernel keeps some budgets per host uid whatever the namespaces (epoll
watches, inotify instances). When every cell ran as ``nobody``, one cell
that spent such a budget kept every neighbour from starting Trio. The
attack test runs the cheap one of those budgets for real (inotify instances,
128 per uid by default), first with one shared uid (the neighbour is
refused: the attack is real) and then with the pool (the neighbour is not).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from cellmesh.config import Paths
from cellmesh.sandbox import CellSpec, JsonlEventLog, SandboxConfigError, SandboxError
from cellmesh.sandbox._bwrap import BwrapBackend
from cellmesh.sandbox._limits import CgroupHost
from cellmesh.sandbox._secrets import MemorySecretBroker
from cellmesh.sandbox._uids import (
    DEFAULT_UID_RANGE,
    MAX_UID,
    MIN_UID,
    UidPool,
    default_uid_pool,
    parse_uid_range,
)

from .conftest import run_probe, workload_pid

PY = sys.executable
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="cells get uids of their own only as root")


# -- the pool ------------------------------------------------------------------------------


def test_uid_pool_gives_a_key_the_same_uid_and_two_keys_two_uids() -> None:
    pool = UidPool(100_000, 100_009)
    a = pool.acquire("data:/x/a", "a.0")
    assert pool.acquire("data:/x/a", "a.1") == a  # the slot's other backend id shares it
    b = pool.acquire("data:/x/b", "b.0")
    assert a != b and a in pool and b in pool
    assert pool.uid_of("a.1") == a and pool.uid_of("nobody") is None
    # The uid stays the key's after every holder is gone and it comes back (a restart,
    # a root restart): it is chosen by the key, not by the order of arrival.
    pool.release("a.0")
    pool.release("a.1")
    again = UidPool(100_000, 100_009)
    assert again.acquire("data:/x/a", "x") == a


def test_uid_pool_never_gives_one_uid_to_two_live_keys_and_frees_it_with_the_last_holder() -> None:
    pool = UidPool(200_000, 200_001)  # two uids: the hash of every key lands on one of them
    a = pool.acquire("k1", "h1")
    b = pool.acquire("k2", "h2")
    assert {a, b} == {200_000, 200_001}
    with pytest.raises(SandboxError, match=r"every host uid for cells is in use \(2 live cells, "
                       r"uids 200000-200001\): give CELL_UID_RANGE a larger range"):
        pool.acquire("k3", "h3")
    pool.acquire("k1", "h1b")
    pool.release("h1")
    with pytest.raises(SandboxError):  # h1b still holds k1's uid
        pool.acquire("k3", "h3")
    pool.release("h1b")
    assert pool.acquire("k3", "h3") == a
    pool.acquire("k4", "h2")  # a holder that moves to another key gives up the old one
    assert pool.uid_of("h2") == b


def test_uid_range_parses_and_refuses_naming_the_variable() -> None:
    assert parse_uid_range("100000-100009") == (100_000, 100_009)
    assert parse_uid_range(" 100000 - 100000 ") == (100_000, 100_000)
    fullwidth = "\uff11\uff10\uff10\uff10\uff10\uff10-\uff11\uff10\uff10\uff10\uff10\uff11"
    for bad in ("", "100000", "100000-", "a-b", "100009-100000", "0-70000", f"70000-{MAX_UID + 1}",
                fullwidth, "100000-100001-100002", "-5-10"):
        with pytest.raises(SandboxConfigError, match="CELL_UID_RANGE"):
            parse_uid_range(bad)
    assert UidPool.from_env({}).first == DEFAULT_UID_RANGE[0]
    assert (UidPool.from_env({"CELL_UID_RANGE": "70000-70009"}).first,
            UidPool.from_env({"CELL_UID_RANGE": "70000-70009"}).size) == (70_000, 10)
    with pytest.raises(SandboxConfigError, match=r"CELL_UID_RANGE.*not FIRST-LAST"):
        default_uid_pool({"CELL_UID_RANGE": "nobody"})  # checked even when not root


@given(st.text(max_size=40))
def test_uid_range_parser_fuzz_only_raises_the_config_error(raw: str) -> None:
    try:
        lo, hi = parse_uid_range(raw)
    except SandboxConfigError as exc:
        assert "CELL_UID_RANGE" in str(exc)
    else:
        assert MIN_UID <= lo <= hi <= MAX_UID


# -- real sandboxes --------------------------------------------------------------------------


@pytest.fixture
def pool_backend(bwrap_path: str, paths: Paths) -> Iterator[BwrapBackend]:
    """A bwrap backend as ``select_backend`` makes it for a root running as root."""
    pool = UidPool(*DEFAULT_UID_RANGE)
    be = BwrapBackend(paths, JsonlEventLog.for_paths(paths), MemorySecretBroker(),
                      CgroupHost.detect({}), bwrap=bwrap_path, host_uid=None, uids=pool)
    yield be
    for cell_id in list(be.tracked()):
        be.destroy(cell_id, grace=0.5)


def _uids_of(pid: int) -> list[int]:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines()
                if x.startswith("Uid:"))
    return [int(v) for v in line.split()[1:]]


SLEEPER = [PY, "-c", "import time; time.sleep(120)"]


@as_root
def test_each_cell_runs_as_a_host_uid_of_its_own_that_survives_a_restart(
    pool_backend: BwrapBackend, paths: Paths
) -> None:
    be = pool_backend
    pool = be.uids
    assert pool is not None
    data = paths.data_dir / "keeper"
    be.create(CellSpec(name="keeper", argv=SLEEPER, data_dir=data))
    be.create(CellSpec(name="other", argv=SLEEPER))
    first = {name: _uids_of(workload_pid(be, be.spawn(name).pid)) for name in ("keeper", "other")}
    keeper, other = first["keeper"][0], first["other"][0]
    assert first == {"keeper": [keeper] * 4, "other": [other] * 4}  # real, effective, saved, fs
    assert keeper != other and keeper in pool and other in pool
    assert data.stat().st_uid == keeper  # its data dir is handed to its uid
    be.kill("keeper")
    be.wait("keeper", timeout=30)
    assert _uids_of(workload_pid(be, be.spawn("keeper").pid))[0] == keeper
    be.destroy("keeper", grace=0.5)
    assert pool.uid_of("keeper") is None  # destroyed: the uid may go to another cell


@as_root
def test_a_data_dir_left_by_another_uid_of_the_range_is_handed_over(
    pool_backend: BwrapBackend, paths: Paths
) -> None:
    """A data dir of the old default uid (65534) or of another pool uid is the cell's own,
    handed to its uid now; one of a stranger is refused, naming the owner."""
    be = pool_backend
    pool = be.uids
    assert pool is not None
    data = paths.data_dir / "moved"
    data.mkdir(parents=True)
    (data / "state").write_text("kept")
    os.chown(data, pool.last, pool.last)
    os.chown(data / "state", pool.last, pool.last)
    status, out = run_probe(be, "moved", "import json; print(json.dumps("
                            "{'state': open('/cell/data/state').read()}))", data_dir=data)
    assert status.reason == "exit" and out == {"state": "kept"}
    assert data.stat().st_uid == (data / "state").stat().st_uid != pool.last
    stranger = paths.data_dir / "stranger"
    stranger.mkdir()
    os.chown(stranger, 4242, 4242)
    be.create(CellSpec(name="stranger", argv=SLEEPER, data_dir=stranger))
    with pytest.raises(SandboxConfigError, match=r"owned by uid 4242, not by 0 or \d+ or uids"):
        be.spawn("stranger")


HOG = """
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
held = 0
while libc.inotify_init1(0) >= 0:
    held += 1
print(held, ctypes.get_errno(), flush=True)
time.sleep(120)
"""

NEIGHBOUR = """
import ctypes, json
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
print(json.dumps({"fd": fd, "errno": ctypes.get_errno()}))
"""


def _inotify_attack(be: BwrapBackend) -> dict[str, object]:
    """Cell ``hog`` takes every inotify instance its uid may have; what does a neighbour get?"""
    r, w = os.pipe()
    be.create(CellSpec(name="hog", argv=[PY, "-c", textwrap.dedent(HOG)]))
    try:
        be.spawn("hog", stdout=w, stderr=2)
        os.close(w)
        with os.fdopen(r) as lines:
            held, errno_ = (int(v) for v in lines.readline().split())
        limit = int(Path("/proc/sys/fs/inotify/max_user_instances").read_text())
        assert held <= limit and errno_ == 24  # EMFILE: the uid's budget is spent
        _status, out = run_probe(be, "neighbour", NEIGHBOUR)
        return out
    finally:
        be.destroy("hog", grace=0.5)


@as_root
def test_a_cell_that_spends_its_uids_kernel_budget_does_not_spend_its_neighbours(
    pool_backend: BwrapBackend, bwrap_path: str, paths: Paths
) -> None:
    # The attack is real: with one uid for every cell, the neighbour gets nothing.
    shared = BwrapBackend(paths, JsonlEventLog.for_paths(paths), MemorySecretBroker(),
                          CgroupHost.detect({}), bwrap=bwrap_path, host_uid=MIN_UID + 7)
    try:
        out = _inotify_attack(shared)
        assert out["fd"] == -1 and out["errno"] == 24
    finally:
        for cell_id in list(shared.tracked()):
            shared.destroy(cell_id, grace=0.5)
    # With a uid per cell the neighbour's budget is its own.
    out = _inotify_attack(pool_backend)
    assert isinstance(out["fd"], int) and out["fd"] >= 0, out


@as_root
async def test_cells_of_a_root_run_as_host_uids_of_their_own(bwrap_path: str) -> None:
    """A real root as root: every cell has a uid of the pool to itself (what `cellmesh up`
    gives them)."""
    from cellmesh.testing.mesh import open_root

    home = Path(tempfile.mkdtemp(prefix="cm-", dir="/tmp"))
    try:
        (home / "cells.py").write_text(textwrap.dedent("""
            import cellmesh

            class Idle(cellmesh.Cell):
                pass
        """))
        toml = "".join(
            f'[cells.{name}]\ndna = "cells.py"\nentry = "cells:Idle"\n{extra}\n'
            for name, extra in (("a", "data = true\n"), ("b", ""), ("c", ""))
        )
        async with open_root(home, toml, sandbox="bwrap") as root:
            pids = {c.name: c.pid for c in root.status().cells}
            assert all(pid is not None for pid in pids.values()), pids
            uids = {name: _uids_of(pid) for name, pid in pids.items() if pid is not None}
            await trio.sleep(0)
        pool = UidPool(*DEFAULT_UID_RANGE)
        assert all(u == [u[0]] * 4 and u[0] in pool for u in uids.values()), uids
        assert len({u[0] for u in uids.values()}) == 3, uids
    finally:
        shutil.rmtree(home, ignore_errors=True)

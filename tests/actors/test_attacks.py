"""Attacks on the root by a hostile cell (issue 10), mounted against a real root and real cells.

Each test runs the attack through the cell's real umbilical and asserts what
must hold: the root stays up, well-behaved callers keep being served, and the
root's descriptors stay bounded (counted in ``/proc/self/fd``: the root runs
in this process). The attacker cells live in ``rootcells.py``.
"""

from __future__ import annotations

import os
import resource
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import rootcells
import trio
from rootcells import Downs, Echo, LinkTo, MonitorFlood, Spawn, SpawnFlood, StopKid, Unwatch, Watch
from test_root import cell, crash, running_root, serving_pid, state, until

from cellmesh import CellUnavailable, RemoteCellError, Synapse
from cellmesh.actors.control import Link, StatusReply, StatusRequest
from cellmesh.actors.root import Root

pytestmark = pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc")


def open_fds() -> int:
    """Descriptors open in this process (the listing's own is not counted)."""
    return len(os.listdir("/proc/self/fd")) - 1


@contextmanager
def fd_ceiling(headroom: int) -> Iterator[int]:
    """Let this process open at most ``headroom`` more descriptors (soft RLIMIT_NOFILE).

    The limit bounds fd *numbers*: it is set to the lowest free number plus
    ``headroom``. The root lives in this process: a root that opened
    descriptors without bound would hit EMFILE here, as the issue's root did
    at 1024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.dup(0)
    os.close(lowest_free)
    ceiling = lowest_free + headroom
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(ceiling, hard), hard))
    try:
        yield ceiling
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def still_serving(paths_dir: Path, name: str = "echo") -> None:
    """The root answers its control socket and ``name`` answers a call."""
    async with Synapse.grow("mitosis", socket_path=paths_dir / "mitosis.sock") as ctl:
        assert isinstance(await ctl.fire(StatusRequest()), StatusReply)
    async with Synapse.grow(name, socket_dir=paths_dir) as syn:
        assert await syn.fire(Echo(7)) == Echo(7)


async def restarted(root: Root, name: str) -> None:
    """SIGKILL ``name``'s process and wait until its supervisor has another one serving."""
    old = serving_pid(root, name)
    crash(root, name)
    await until(root, name, lambda: serving_pid(root, name) not in (None, old))


async def fd_peak(sampled: list[int], task_status: trio.TaskStatus[None]) -> None:
    """Sample this process's descriptor count every millisecond (until cancelled).

    A sampler, not a synchronisation: it only has to see the delivery
    connections, which stay open for a whole watcher's queue.
    """
    task_status.started()
    while True:
        sampled.append(open_fds())
        await trio.sleep(0.001)


# --------------------------------------------------------------------------


async def test_attack_monitor_flood_of_a_missing_cell_is_bounded_and_the_root_serves() -> None:
    toml = "[root]\nmax_monitors = 64\n\n" + cell("attacker", "Attacker") + cell("echo", "Echoer")
    logs: list[str] = []
    async with running_root(toml, logs=logs) as (root, paths):
        before = open_fds()
        with fd_ceiling(headroom=200):
            async with Synapse.grow("attacker", socket_dir=paths.socket_dir) as syn:
                result = await syn.fire(MonitorFlood(target="no-such-cell", n=3000, parallel=32))
                await root.wait_celldowns_settled()
                downs = (await syn.fire(Downs())).downs
            await still_serving(paths.socket_dir)
        # Every request was answered: granted (and its noproc delivered) or refused.
        assert result.ok + result.refused == 3000
        assert result.refused > 0, "the bound never applied"
        assert "max_monitors" in result.error and "attacker" in result.error
        assert len(downs) == result.ok
        assert set(downs) == {"no-such-cell:noproc"}
        assert open_fds() <= before + 8
        assert state(root, "attacker") == "running"


async def test_attack_monitor_flood_by_a_cell_that_never_takes_its_notices() -> None:
    """The issue's crash: every noproc notice held a root connection open (EMFILE)."""
    toml = "[root]\nmax_monitors = 64\n\n" + cell("attacker", "SleepyAttacker") + cell(
        "echo", "Echoer"
    )
    async with running_root(toml) as (root, paths):
        before = open_fds()
        with fd_ceiling(headroom=100):
            async with Synapse.grow("attacker", socket_dir=paths.socket_dir) as syn:
                result = await syn.fire(MonitorFlood(target="no-such-cell", n=3000, parallel=32))
            await still_serving(paths.socket_dir)
            assert open_fds() <= before + 8  # one stuck delivery connection, not 3000
        assert result.ok == 64 and result.refused == 3000 - 64
        assert "undelivered CellDown notices" in result.error
        assert root.contained_failures == 0


async def test_attack_monitors_on_a_dying_neighbour_are_capped_and_delivered_boundedly() -> None:
    toml = "[root]\ncelldown_concurrency = 2\n\n" + cell("attacker", "Attacker") + cell(
        "victim", "Echoer"
    ) + cell("echo", "Echoer")
    async with running_root(toml) as (root, paths):
        async with Synapse.grow("attacker", socket_dir=paths.socket_dir) as syn:
            result = await syn.fire(MonitorFlood(target="victim", n=5000))
            assert result.ok == 1024  # the default [root] max_monitors
            assert result.refused == 5000 - 1024
            before = open_fds()
            sampled: list[int] = []
            with fd_ceiling(headroom=100):
                async with trio.open_nursery() as nursery:
                    await nursery.start(fd_peak, sampled)
                    await restarted(root, "victim")
                    await root.wait_celldowns_settled()
                    nursery.cancel_scope.cancel()
                downs = (await syn.fire(Downs())).downs
                # Its monitors fired, so it may hold new ones again.
                assert (await syn.fire(MonitorFlood(target="victim", n=1))).ok == 1
            await still_serving(paths.socket_dir)
        assert len(downs) == 1024
        assert all(d.startswith("victim:killed by SIGKILL") for d in downs)
        # One delivery connection at a time per watcher, never one per notice;
        # the rest is the victim's restart (its new process and standby).
        assert max(sampled) - before <= 24
        assert root.contained_failures == 0


async def test_attack_link_flood_is_capped_with_a_clear_refusal() -> None:
    toml = "[root]\nmax_links = 2\n\n" + "".join(
        cell(name, "Attacker", calls='["echo", "b", "c"]') if name == "attacker"
        else cell(name, "Echoer")
        for name in ("attacker", "echo", "b", "c")
    )
    async with running_root(toml) as (_root, paths):
        async with Synapse.grow("attacker", socket_dir=paths.socket_dir) as syn:
            result = await syn.fire(LinkTo(targets=["echo", "b", "c", "echo"]))
        assert (result.ok, result.refused) == (3, 1)  # relinking echo is no new link
        assert "attacker" in result.error and "max_links" in result.error
        await still_serving(paths.socket_dir)


async def test_attack_a_cell_cannot_link_to_a_cell_it_was_not_granted() -> None:
    """A link kills both sides: a hostile cell linking to any cell, then crashing,
    would kill a neighbour. Only `calls`, children and the parent may be linked."""
    toml = "[supervisor]\nintensity = 5\n\n" + cell(
        "attacker", "Attacker", calls='["echo"]'
    ) + cell("echo", "Echoer") + cell("secret", "Echoer")
    async with running_root(toml) as (root, paths):
        async with Synapse.grow("attacker", socket_dir=paths.socket_dir) as syn:
            result = await syn.fire(LinkTo(targets=["secret", "echo"]))
        assert (result.ok, result.refused) == (1, 1)
        assert "attacker may not link to it" in result.error and "secret" in result.error
        secret = serving_pid(root, "secret")
        crash(root, "attacker")
        await until(root, "echo", lambda: state(root, "echo") == "running"
                    and any(r.cell == "echo" for r in root.restart_log))
        assert serving_pid(root, "secret") == secret  # untouched
        assert [r.cell for r in root.restart_log if r.cell != "attacker"] == ["echo"]
        # A refusal tells the cell why, never the root's code (no traceback).
        umbilical = root.slots["attacker"].umbilical_path
        async with Synapse.grow("mitosis", socket_path=umbilical) as umb:
            with pytest.raises(RemoteCellError) as info:
                await umb.fire(Link(target="secret", trap_exits=False))
        assert "may not link to it" in info.value.remote_message
        assert info.value.remote_traceback is None


async def test_attack_monitor_targets_must_be_cell_names() -> None:
    toml = cell("attacker", "Attacker") + cell("echo", "Echoer")
    async with running_root(toml) as (_root, paths):
        async with Synapse.grow("attacker", socket_dir=paths.socket_dir) as syn:
            for target in ("x" * 100_000, "../../etc", ""):
                result = await syn.fire(MonitorFlood(target=target, n=1))
                assert (result.ok, result.refused) == (0, 1)
                assert "target" in result.error
            result = await syn.fire(LinkTo(targets=["a" * 70]))
            assert (result.ok, result.refused) == (0, 1)
            assert "not a valid cell name" in result.error
        await still_serving(paths.socket_dir)


async def test_attack_a_cell_cannot_cancel_another_cells_monitor() -> None:
    toml = cell("watcher", "Watcher") + cell("attacker", "Attacker") + cell("echo", "Echoer")
    async with running_root(toml) as (root, paths):
        async with Synapse.grow("watcher", socket_dir=paths.socket_dir) as watcher:
            ref = (await watcher.fire(Watch(target="echo"))).n
            async with Synapse.grow("attacker", socket_dir=paths.socket_dir) as attacker:
                assert await attacker.fire(Unwatch(ref=ref)) == Echo(ref)  # silently ignored
            await restarted(root, "echo")
            await root.wait_celldowns_settled()
            assert [d.split(":")[0] for d in (await watcher.fire(Downs())).downs] == ["echo"]


async def test_attack_a_watcher_that_never_takes_its_notice_releases_the_delivery_slot() -> None:
    # One delivery slot: the sleepy watcher holds it until its patience
    # (start_timeout + 5 s) runs out; then the other watcher is served.
    toml = (
        "[root]\ncelldown_concurrency = 1\n\n"
        + cell("sleepy", "Sleepy", start_timeout="3")
        + cell("watcher", "Watcher")
        + cell("echo", "Echoer")
    )
    logs: list[str] = []
    async with running_root(toml, logs=logs) as (root, paths):
        async with Synapse.grow("sleepy", socket_dir=paths.socket_dir) as sleepy:
            for _ in range(3):
                await sleepy.fire(Watch(target="echo"))
        async with Synapse.grow("watcher", socket_dir=paths.socket_dir) as watcher:
            await watcher.fire(Watch(target="echo"))
            await restarted(root, "echo")
            await root.wait_celldowns_settled()
            downs = (await watcher.fire(Downs())).downs
        assert [d.split(":")[0] for d in downs] == ["echo"]
        assert any("CellDown for sleepy not delivered" in line for line in logs)
        await still_serving(paths.socket_dir)


async def test_attack_concurrent_child_starts_stay_within_the_quota() -> None:
    """A cell asks for many children at once: the quota counts the children being
    started, so exactly ``max_children`` start and the others are refused (an
    audit's cell with ``max_children = 40`` got 60 children by asking at once:
    every request saw the count before any start ended). Two requests for one
    name at once start it once."""
    toml = (
        cell("attacker", "Attacker", max_children="3", templates='["worker"]')
        + '[templates.worker]\ndna = "rootcells.py"\nentry = "rootcells:Echoer"\n\n'
        + cell("echo", "Echoer")
    )
    quota = "child quota reached (3 children)"

    def children() -> list[str]:
        rows = [c.name for c in root.status().cells if c.name.startswith("attacker.")]
        assert sorted(root.slots["attacker"].children) == sorted(rows)
        return sorted(rows)

    async with running_root(toml) as (root, paths):
        async with Synapse.grow("attacker", socket_dir=paths.socket_dir) as syn:
            got = (await syn.fire(SpawnFlood(suffixes=[f"k{i}" for i in range(8)]))).downs
            ok = sorted(line.removeprefix("ok:") for line in got if line.startswith("ok:"))
            refused = [line for line in got if not line.startswith("ok:")]
            assert len(ok) == 3, got
            assert len(refused) == 5 and all(quota in line for line in refused), got
            assert children() == ok
            # Full: one more is refused, at once or alone.
            with pytest.raises(RemoteCellError, match=r"child quota reached \(3 children\)"):
                await syn.fire(Spawn(suffix="late"))
            # A stopped child frees its place, for one new child only.
            await syn.fire(StopKid(suffix=ok[0].removeprefix("attacker.")))
            got = (await syn.fire(SpawnFlood(suffixes=[f"n{i}" for i in range(4)]))).downs
            assert sum(line.startswith("ok:") for line in got) == 1, got
            assert len(children()) == 3
            # Two places free, one name asked for four times at once: it starts once.
            for name in children()[:2]:
                await syn.fire(StopKid(suffix=name.removeprefix("attacker.")))
            got = (await syn.fire(SpawnFlood(suffixes=["dup"] * 4))).downs
            assert sorted(got)[0] == "ok:attacker.dup", got
            assert all("a cell of that name exists" in line for line in sorted(got)[1:]), got
            assert len(children()) == 2 and "attacker.dup" in children()
        await still_serving(paths.socket_dir)
        assert state(root, "attacker") == "running"


async def test_synapse_out_of_descriptors_is_cell_unavailable() -> None:
    toml = cell("echo", "Echoer")
    async with running_root(toml) as (_root, paths):
        with fd_ceiling(headroom=0), pytest.raises(CellUnavailable, match="no socket"):
            async with Synapse.grow("echo", socket_dir=paths.socket_dir):
                pass
        await still_serving(paths.socket_dir)


async def test_a_cell_home_others_can_write_is_refused_naming_it(tmp_path: Path) -> None:
    from cellmesh.errors import ConfigError
    from cellmesh.testing.mesh import open_root

    home = tmp_path / "h"
    home.mkdir()
    shutil.copy(Path(rootcells.__file__), home / "rootcells.py")
    os.chmod(home, 0o777)  # another user could plant data/<cell> as a symlink
    with pytest.RaisesGroup(ConfigError, flatten_subgroups=True) as info:
        async with open_root(home, cell("echo", "Echoer")):
            pass
    error = info.value.exceptions[0]
    assert isinstance(error, ConfigError) and error.source == str(home)
    assert "writable by group and others" in error.problem

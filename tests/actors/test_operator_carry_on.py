"""A change the operator asked for carries on when its client goes away (Ctrl-C).

``cellmesh wipe``, ``cellmesh replicas`` and ``cellmesh reload`` ran inside
their request's connection: a client that went away cancelled them part-way.
A wipe left its replica stopped and out of the group (two voters, nothing in
status or the log), a grow stopped at an even size, a reload left a half-made
preflight slot holding the new cell's name (every later reload adding it was
refused). They now run in a task of the root's, as a swap does, and the
root's log says the client went away and how the change ended. Real roots,
real cell processes; the client is a real control connection, cancelled.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import rootcells
import trio
from test_replicas_root import GROUP, group_toml, healthy, leader, note, running, state, until

from cellmesh.actors.control import ChangeReplicas, ReloadManifest, WipeReplica
from cellmesh.actors.root import Root
from cellmesh.cli._client import control_call
from cellmesh.testing.mesh import open_root


async def _asked_then_gone(root: Root, msg: object, started: Callable[[], bool]) -> None:
    """Send ``msg`` on a control connection as the CLI does; once ``started()`` holds,
    the client goes away (its connection closes with the request unanswered)."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(control_call, root.paths, msg)
        with trio.fail_after(60):
            while not started():  # (polled: a new slot fires no change event)
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


def _settled(root: Root, members: tuple[int, ...]) -> bool:
    group = root._replicas.groups[GROUP]
    stats = group.stats()
    return (group.record.members == members and not group.record.joining
            and group.change == "" and group.view().leader is not None
            and sorted(stats) == list(members)
            and all(sorted(s.voters) == list(members) for s in stats.values()))


async def test_a_wipe_whose_client_went_away_carries_on_to_its_end() -> None:
    logs: list[str] = []
    async with running(group_toml(), log=logs.append) as root:
        await healthy(root)
        victim = next(i for i in (0, 1, 2) if i != leader(root))
        name = f"{GROUP}/{victim}"
        await _asked_then_gone(root, WipeReplica(name=name), lambda: state(root, name) != "running")
        await until(root, lambda: _settled(root, (0, 1, 2)), timeout=90)
        assert await note(root, "after") > 0
    assert f"root: the wipe of {name}: its client went away; it carries on in the root" in logs
    assert (f"root: the wipe of {name}, whose client went away, ended: wiped {name}: it "
            "rejoined empty and caught up from its peers") in logs


async def test_a_grow_whose_client_went_away_carries_on_to_its_target() -> None:
    logs: list[str] = []
    async with running(group_toml(), log=logs.append) as root:
        await healthy(root)
        await _asked_then_gone(root, ChangeReplicas(name=GROUP, count=5),
                               lambda: f"{GROUP}/3" in root.slots)
        await until(root, lambda: _settled(root, (0, 1, 2, 3, 4)), timeout=120)
    what = f"root: the change of {GROUP} to 5 replicas"
    assert f"{what}: its client went away; it carries on in the root" in logs
    assert any(line.startswith(f"{what}, whose client went away, ended: ") for line in logs)


SLOW = '''
import time

import cellmesh

time.sleep(1.5)  # a heavy import: the client goes away meanwhile


@cellmesh.protein("t.carry.Ping")
class Ping:
    n: int


class Slow(cellmesh.Cell):
    @cellmesh.receptor
    async def ping(self, msg: Ping) -> Ping:
        return msg
'''

BASE = '[cells.echo]\ndna = "rootcells.py"\nentry = "rootcells:Echoer"\n'


async def test_a_reload_whose_client_went_away_starts_its_cell_and_leaves_no_slot() -> None:
    home = Path(tempfile.mkdtemp(prefix="co-", dir="/tmp"))
    logs: list[str] = []
    try:
        shutil.copy(Path(rootcells.__file__), home / "rootcells.py")
        (home / "slowcell.py").write_text(SLOW)
        async with open_root(home, BASE, sandbox="host", log=logs.append) as root:
            (home / "cellmesh.toml").write_text(
                BASE + '\n[cells.slow]\ndna = "slowcell.py"\nentry = "slowcell:Slow"\n')
            await _asked_then_gone(root, ReloadManifest(timeout=30.0, grace=0.1),
                                   lambda: "slow.preflight" in root.slots)
            await until(root, lambda: "slow" in root.slots and state(root, "slow") == "running")
            assert "slow.preflight" not in root.slots
            assert not (root.paths.socket_dir / "slow.preflight.sock").exists()
            assert "slow" in root.manifest.cells
        assert "root: the reload: its client went away; it carries on in the root" in logs
        assert "root: the reload, whose client went away, ended: done: started slow (new in " \
            "the manifest)" in logs
    finally:
        shutil.rmtree(home, ignore_errors=True)

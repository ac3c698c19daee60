"""Membership changes of a replicated bank through the real root, under bwrap, under load.

``cellmesh replicas bank 5`` (the control request ``ChangeReplicas``) grows
the group one server at a time while clients keep transferring; a leader is
killed while it has five replicas; ``cellmesh replicas bank 3`` shrinks it
back, the leader last. The bank's promises hold throughout
(``bankload.BankLoad.check``). The next ``up`` with a changed ``replicas``
value on the same data directory changes the group the same way.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import trio
from bankload import GROUP, BankLoad, bank, deposit_all
from test_replicas_root_bank import bank_root, bwrap

from cellmesh import Synapse
from cellmesh.actors.control import Ack, ChangeReplicas

__all__ = ["bwrap"]  # the fixture, imported


def record(root_home: Path) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((root_home / "data" / GROUP / "group.json").read_text())
    return loaded


async def test_replicas_root_membership_changes_under_load(bwrap: None) -> None:
    async with bank_root(3) as root:
        await bank(root).a_leader()
        await deposit_all(root)
        load = BankLoad(root, clients=3)
        async with trio.open_nursery() as nursery, Synapse.grow(
            "mitosis", socket_path=root.paths.umbilical
        ) as ctl:
            await nursery.start(load.driver.run)
            await load.driver.progress(30)
            grown = await ctl.fire(ChangeReplicas(name=GROUP, count=5))
            assert isinstance(grown, Ack), grown
            assert grown.text == "bank: 3 -> 5 replicas; added bank/3, bank/4"
            assert bank(root).members() == [0, 1, 2, 3, 4]
            await load.driver.progress(30)
            first = await bank(root).a_leader()
            before = bank(root).term()
            await bank(root).kill(first)
            await bank(root).new_leader(before)
            await load.driver.progress(30)
            shrunk = await ctl.fire(ChangeReplicas(name=GROUP, count=3))
            assert isinstance(shrunk, Ack), shrunk
            assert shrunk.text == "bank: 5 -> 3 replicas; removed bank/3, bank/4"
            await load.driver.progress(30)
            load.driver.stop()
        assert bank(root).members() == [0, 1, 2]
        assert not (root.paths.data_dir / GROUP / "3").exists()
        assert not (root.paths.data_dir / GROUP / "4").exists()
        # their log files join the stopped children's, of which the newest 64 are kept:
        # ids are never reused, so a group grown and shrunk without end kept every set
        assert sorted(root._child_logs._stopped) == ["bank..3", "bank..4"]
        assert not root._child_logs.running("bank..3") and root._child_logs.running("bank..0")
        rec = record(root.paths.home)
        assert (rec["members"], rec["next_id"], rec["joining"]) == ([0, 1, 2], 5, [])
        await load.check(expect_members=3)


async def test_replicas_root_membership_up_applies_a_changed_count(bwrap: None) -> None:
    home = Path(tempfile.mkdtemp(prefix="cb-", dir="/tmp"))
    try:
        async with bank_root(3, home) as root:
            await bank(root).a_leader()
            await deposit_all(root)
        async with bank_root(5, home) as root:
            await bank(root).converge(expect_members=5)
            (group,) = root.status().groups
            assert (group.members, group.target) == ([0, 1, 2, 3, 4], 5)
            await bank(root).identical()
        assert record(home)["members"] == [0, 1, 2, 3, 4]
    finally:
        shutil.rmtree(home, ignore_errors=True)

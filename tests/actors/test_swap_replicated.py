"""Issue 13, item 6: `cellmesh swap` of a replicated cell, through the real root under bwrap.

A 3-replica bank (``replswapcells.source``: the bank of
:mod:`cellmesh.testing.bank` with a version and a query naming it) serves
concurrent clients (transfers and reads) while the test swaps it to new
code. The promises: zero failed calls; every acknowledged write applied
exactly once; the history linearizable; the replicas byte-identical; the
new code serving afterwards; followers swapped first, the leader last.
A new version that fails to import, to start, to be ready in time, or
crashes during its catch-up or probation rolls back (the replicas
end on the old code, serving); a hostile new version (lying stats, junk on
its peers' sockets, never catching up) neither fools the swap nor takes
down the root or the group.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from bankload import GROUP, BankLoad, bank, bank_toml, deposit_all
from replswapcells import Code, WhichCode, source

from cellmesh import Synapse
from cellmesh.actors.control import (
    Refused,
    ReloadManifest,
    ReloadReport,
    SwapCell,
    SwapReport,
)
from cellmesh.actors.root import Root
from cellmesh.sandbox._events import read_events
from cellmesh.testing.mesh import open_root
from cellmesh.testing.rootfaults import until

MEMBERS = (0, 1, 2)


@pytest.fixture
def bwrap(bwrap_usable: str | None) -> None:
    if bwrap_usable is not None:
        pytest.skip(bwrap_usable)


@asynccontextmanager
async def bank_root(version: str = "1") -> AsyncIterator[tuple[Root, Path]]:
    home = Path(tempfile.mkdtemp(prefix="cs-", dir="/tmp"))
    try:
        (home / "bankcell.py").write_text(source(version))
        async with open_root(home, bank_toml(3), sandbox="bwrap", stop_timeout=20) as root:
            yield root, home
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def control(root: Root, msg: object) -> object:
    async with Synapse.grow("mitosis", socket_path=root.paths.umbilical) as ctl:
        return await ctl.fire(msg)


async def swap(root: Root, name: str = GROUP, timeout: float = 30.0,
               grace: float = 0.5) -> SwapReport:
    report = await control(root, SwapCell(name=name, timeout=timeout, grace=grace))
    assert isinstance(report, SwapReport), report
    return report


async def whole(root: Root) -> int:
    """Every member runs and a majority agrees on a leader; return it."""
    from cellmesh.actors.groupswap import agreed_leader

    group = root._replicas.groups[GROUP]

    def ready() -> bool:
        return (len(group.stats()) == len(group.members)
                and agreed_leader(group.stats(), len(group.members)) is not None)

    await until(root, ready, "every replica running and an agreed leader")
    leader = agreed_leader(group.stats(), len(group.members))
    assert leader is not None
    return leader


def versions(root: Root) -> dict[int, str]:
    return {i: root.slots[f"{GROUP}/{i}"].version for i in MEMBERS}


def digests(root: Root) -> set[str]:
    return {root.slots[f"{GROUP}/{i}"].dna_digest for i in MEMBERS}


def pids(root: Root) -> dict[int, int | None]:
    return {i: root.pid_of(root.slots[f"{GROUP}/{i}"]) for i in MEMBERS}


async def which(root: Root) -> str:
    async with Synapse.grow(GROUP, socket_dir=root.paths.socket_dir) as syn:
        code = await syn.fire(WhichCode())
    assert isinstance(code, Code)
    return code.version


def assert_no_failed_call(load: BankLoad) -> None:
    assert load.errors == [], load.errors[:5]
    assert load.read_errors == [], load.read_errors[:5]
    assert load.unknown == set() and load.unsent == set(), (load.unknown, load.unsent)


async def test_swap_replicated_under_load_fails_no_call_and_keeps_every_write(
    bwrap: None,
) -> None:
    async with bank_root("1") as (root, home):
        leader = await whole(root)
        await deposit_all(root)
        assert await which(root) == "1"
        for i in MEMBERS:  # monitors of each replica: a swap must not fire them
            root._watches.monitor("test-watcher", f"{GROUP}/{i}", alive=True)
        load = BankLoad(root, clients=4)
        async with trio.open_nursery() as nursery:
            await nursery.start(load.driver.run)
            await load.driver.progress(30)
            (home / "bankcell.py").write_text(source("2"))
            report = await swap(root)
            await load.driver.progress(30)
            load.driver.stop()
        assert report.outcome == "swapped", report
        assert report.from_version == "1" and report.to_version == "2", report
        # followers first, the leader last (each entry: when it had caught up)
        followers = [i for i in MEMBERS if i != leader]
        assert list(report.timeline) == [f"{GROUP}/{i}" for i in (*followers, leader)]
        assert_no_failed_call(load)
        await load.check(expect_members=3)  # exactly once, linearizable, byte-identical
        assert versions(root) == dict.fromkeys(MEMBERS, "2")
        assert digests(root) == {report.to_dna}
        assert await which(root) == "2"
        # a swap is not a restart (nor a CellDown), and each replica logged it
        assert all(root.slots[f"{GROUP}/{i}"].restarts == 0 for i in MEMBERS)
        await root.wait_celldowns_settled()
        assert root._watches.load("test-watcher") == len(MEMBERS)
        for i in MEMBERS:
            events = read_events(root.paths.log_dir / f"{GROUP}..{i}.events.jsonl")
            kinds = [e["event"] for e in events if e["event"] in ("swap_started", "swapped")]
            assert kinds == ["swap_started", "swapped"], events
        # the same DNA again: nothing to do
        again = await swap(root)
        assert again.outcome == "unchanged", again
        # --rollback: back to version 1, one replica at a time again
        back = await control(root, SwapCell(name=GROUP, timeout=30, grace=0, rollback=True))
        assert isinstance(back, SwapReport) and back.outcome == "swapped", back
        assert back.to_dna == report.from_dna and versions(root) == dict.fromkeys(MEMBERS, "1")
        assert await which(root) == "1"


async def test_swap_replicated_rolls_back_a_version_that_fails_each_way(
    bwrap: None,
) -> None:
    async with bank_root("1") as (root, home):
        await whole(root)
        await deposit_all(root)
        before = digests(root)
        load = BankLoad(root, clients=2)
        async with trio.open_nursery() as nursery:
            await nursery.start(load.driver.run)
            await load.driver.progress(10)
            # 1. fails to import: found in a standby, before any replica stops
            running = pids(root)
            (home / "bankcell.py").write_text(source("2", "import"))
            report = await swap(root)
            assert report.outcome == "rolled_back", report
            assert "did not import (the replica was not stopped)" in report.cause, report
            assert "ImportError: version 2 cannot be imported" in report.cause, report
            assert pids(root) == running  # nothing was restarted
            assert digests(root) == before
            await load.driver.progress(10)
            # 2. fails to start: the first follower fails, goes back to the old code
            leader = await whole(root)
            (home / "bankcell.py").write_text(source("3", "start"))
            report = await swap(root)
            assert report.outcome == "rolled_back", report
            first = min(i for i in MEMBERS if i != leader)
            assert f"the new version of {GROUP}/{first} did not start" in report.cause, report
            assert "RuntimeError" in report.cause and "refuses to start" in report.cause, report
            await whole(root)
            await load.driver.progress(10)
            # 3. never ready: the step's timeout rolls it back
            (home / "bankcell.py").write_text(source("4", "hang"))
            report = await swap(root, timeout=5.0)
            assert report.outcome == "rolled_back", report
            assert "did not start: not ready within 5 s" in report.cause, report
            await whole(root)
            await load.driver.progress(10)
            # 4. serves, then crashes before its probation is over
            (home / "bankcell.py").write_text(source("5", "die"))
            report = await swap(root, timeout=10.0, grace=2.0)
            assert report.outcome == "rolled_back", report
            assert "did not catch up: it exited" in report.cause, report
            assert "RuntimeError" in report.cause and "dies after it started" in report.cause
            await whole(root)
            await load.driver.progress(10)
            load.driver.stop()
        assert_no_failed_call(load)
        await load.check(expect_members=3)
        assert digests(root) == before
        assert versions(root) == dict.fromkeys(MEMBERS, "1")
        assert await which(root) == "1"


async def test_swap_replicated_hostile_new_version_cannot_fool_it_or_take_the_group_down(
    bwrap: None,
) -> None:
    async with bank_root("1") as (root, home):
        leader = await whole(root)
        await deposit_all(root)
        load = BankLoad(root, clients=3)
        async with trio.open_nursery() as nursery:
            await nursery.start(load.driver.run)
            await load.driver.progress(20)
            (home / "bankcell.py").write_text(source("2", "liar"))
            report = await swap(root, timeout=6.0)
            await load.driver.progress(20)
            load.driver.stop()
        first = min(i for i in MEMBERS if i != leader)
        # it claimed to lead and to have applied index 10**12; the leader's word counts
        assert report.outcome == "rolled_back", report
        assert f"the new version of {GROUP}/{first} did not catch up" in report.cause, report
        assert "(its stats claim 1000000000000)" in report.cause, report
        assert_no_failed_call(load)
        await load.check(expect_members=3)
        assert versions(root) == dict.fromkeys(MEMBERS, "1")
        assert root.contained_failures == 0


async def test_swap_replicated_refuses_one_replica_and_a_lost_quorum_and_reload_applies_it(
    bwrap: None,
) -> None:
    async with bank_root("1") as (root, home):
        await whole(root)
        refused = await control(root, SwapCell(name=f"{GROUP}/1", timeout=10, grace=0))
        assert isinstance(refused, Refused), refused
        assert f"is one replica of the replicated cell {GROUP}" in refused.message
        assert f"cellmesh swap {GROUP}" in refused.message
        # one replica down: swapping another would leave 1 of 3
        group = root._replicas.groups[GROUP]
        assert group.handle is not None
        await group.handle.stop_member(group.members[2])
        (home / "bankcell.py").write_text(source("2"))
        running = pids(root)
        report = await swap(root)
        assert report.outcome == "failed", report
        assert f"{GROUP}/2 not running" in report.cause, report
        assert "would leave 1 of 3 running (a majority is 2)" in report.cause, report
        assert pids(root) == running
        await group.handle.start_member(group.members[2])
        await bank(root).converge(expect_members=3)
        await bank(root).identical()
        # the whole group back: a reload applies the new code the same way
        await whole(root)
        reloaded = await control(root, ReloadManifest(timeout=30, grace=0.2))
        assert isinstance(reloaded, ReloadReport) and reloaded.ok, reloaded
        assert f"swapped {GROUP} (one replica at a time)" in reloaded.lines, reloaded
        assert versions(root) == dict.fromkeys(MEMBERS, "2")
        assert await which(root) == "2"


async def stop_half_way(root: Root, home: Path, version: str) -> tuple[SwapReport, int, int]:
    """Swap to ``version`` and stop the leader while the first follower is in its probation:
    the swap stops before the next replica (quorum), leaving the group mixed.
    Returns the report, the replica swapped and the leader, running again."""
    leader = await whole(root)
    first = min(i for i in MEMBERS if i != leader)
    group = root._replicas.groups[GROUP]
    assert group.handle is not None
    (home / "bankcell.py").write_text(source(version))
    box: list[SwapReport] = []

    async def swapper() -> None:
        box.append(await swap(root, grace=5.0))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(swapper)
        await until(root, lambda: root.slots[f"{GROUP}/{first}"].swap_phase == "probation",
                    f"{GROUP}/{first} in its probation")
        await group.handle.stop_member(group.members[leader])
    await group.handle.start_member(group.members[leader])
    await whole(root)
    return box[0], first, leader


async def test_swap_replicated_a_swap_stopped_half_way_goes_back_or_on(bwrap: None) -> None:
    """A replica going down mid-swap stops it with the group mixed; ``--rollback`` then
    takes back only the replica it reached, and a new swap restarts only the others."""
    async with bank_root("1") as (root, home):
        await deposit_all(root)
        report, first, leader = await stop_half_way(root, home, "2")
        assert report.outcome == "failed", report
        assert f"{GROUP}/{leader} not running" in report.cause, report
        assert f"{GROUP}/{first} runs the new code" in report.cause, report
        assert f"`cellmesh swap {GROUP} --rollback` takes {GROUP}/{first} back" in report.cause
        mixed = versions(root)
        assert mixed[first] == "2" and [v for i, v in mixed.items() if i != first] == ["1", "1"]
        # --rollback: only the replica the swap reached goes back
        running = pids(root)
        back = await control(root, SwapCell(name=GROUP, timeout=30, grace=0, rollback=True))
        assert isinstance(back, SwapReport) and back.outcome == "swapped", back
        assert list(back.timeline) == [f"{GROUP}/{first}"], back
        assert versions(root) == dict.fromkeys(MEMBERS, "1")
        assert all(pids(root)[i] == running[i] for i in MEMBERS if i != first)
        assert await which(root) == "1"
        # now no code every replica ran before: refused, naming what each ran
        refused = await control(root, SwapCell(name=GROUP, timeout=30, grace=0, rollback=True))
        assert isinstance(refused, Refused), refused
        assert "no code in common" in refused.message, refused
        # stopped half-way again; this time a new swap finishes it, without the first
        report, first, leader = await stop_half_way(root, home, "3")
        assert report.outcome == "failed", report
        running = pids(root)
        on = await swap(root, grace=0)
        assert on.outcome == "swapped", on
        assert first not in {int(k.rsplit("/", 1)[1]) for k in on.timeline}, on
        assert pids(root)[first] == running[first]
        assert versions(root) == dict.fromkeys(MEMBERS, "3")
        assert await which(root) == "3"
        await bank(root).converge(expect_members=3)
        await bank(root).identical()
        # and every replica ran version 1 before it: --rollback goes there in one piece
        back = await control(root, SwapCell(name=GROUP, timeout=30, grace=0, rollback=True))
        assert isinstance(back, SwapReport) and back.outcome == "swapped", back
        assert versions(root) == dict.fromkeys(MEMBERS, "1")

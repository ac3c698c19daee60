"""A replicated cell's swap history and supervision after swaps that rolled back (docs/swap.md).

Through the real root under bwrap, with a 3-replica bank
(``replswapcells.source``):

* ``--rollback`` on the group goes back to the DNA every replica ran before
  the last swap *that took effect*: a later swap that rolled back -- its new
  code did not import on the first replica, or it was applied to one
  follower and failed on the next -- leaves each replica's history as it
  was, so the rollback still works (as for a plain cell);
* a new version that fails to start, or crashes within its catch-up or
  probation, is the swap's rollback cause, not a crash of the replica: no
  restart count, no restart-log line, no ``crashed`` line (``last_exit``) in
  ``status``, no ``CellDown``, the replica not given up, the group not
  restarted by its supervisor; each replica logs ``swap_rolled_back``.
"""

from __future__ import annotations

import pytest
from bankload import GROUP, bank, deposit_all
from replswapcells import source
from test_swap_replicated import (  # the same real group under bwrap, and its helpers
    MEMBERS,
    bank_root,
    control,
    versions,
    which,
    whole,
)

from cellmesh.actors.control import StatusReply, StatusRequest, SwapCell, SwapReport
from cellmesh.actors.root import Root
from cellmesh.sandbox._events import read_events


@pytest.fixture
def bwrap(bwrap_usable: str | None) -> None:
    if bwrap_usable is not None:
        pytest.skip(bwrap_usable)


async def swap(root: Root, *, rollback: bool = False, timeout: float = 30.0,
               grace: float = 0.2) -> SwapReport:
    report = await control(root, SwapCell(name=GROUP, timeout=timeout, grace=grace,
                                          rollback=rollback))
    assert isinstance(report, SwapReport), report
    return report


def history(root: Root) -> dict[int, tuple[str, str | None]]:
    """Each replica's DNA and the DNA ``--rollback`` would go back to."""
    out: dict[int, tuple[str, str | None]] = {}
    for i in MEMBERS:
        slot = root.slots[f"{GROUP}/{i}"]
        prev = slot.previous_dna
        out[i] = (slot.dna_digest, None if prev is None else prev.digest)
    return out


def fails_to_start_on(version: str, replica: int) -> str:
    """A version whose ``on_start`` raises on ``replica`` alone (fine on the others)."""
    text = source(version)
    line = "MODE = 'ok'\n"
    assert text.count(line) == 1
    return text.replace(
        line, f"MODE = 'start' if os.environ['CELL_REPLICA_ID'] == '{replica}' else 'ok'\n"
    )


async def test_swap_replicated_rollback_goes_back_past_swaps_that_rolled_back(
    bwrap: None,
) -> None:
    async with bank_root("1") as (root, home):
        await whole(root)
        await deposit_all(root)
        (home / "bankcell.py").write_text(source("2"))
        forward = await swap(root)
        assert forward.outcome == "swapped", forward
        v1, v2 = forward.from_dna, forward.to_dna
        assert history(root) == dict.fromkeys(MEMBERS, (v2, v1))

        # 1. the new code does not import: found on the first replica, nothing stopped
        (home / "bankcell.py").write_text(source("3", "import"))
        report = await swap(root)
        assert report.outcome == "rolled_back", report
        assert "did not import (the replica was not stopped)" in report.cause, report
        assert history(root) == dict.fromkeys(MEMBERS, (v2, v1))

        # 2. applied to the first follower, fails to start on the second: both go back
        leader = await whole(root)
        first, second = sorted(i for i in MEMBERS if i != leader)
        (home / "bankcell.py").write_text(fails_to_start_on("4", second))
        report = await swap(root)
        assert report.outcome == "rolled_back", report
        assert f"the new version of {GROUP}/{second} did not start" in report.cause, report
        assert f"{GROUP}/{first}" in report.timeline, report  # it ran the new code, caught up
        await whole(root)
        assert versions(root) == dict.fromkeys(MEMBERS, "2")
        assert history(root) == dict.fromkeys(MEMBERS, (v2, v1))

        # --rollback: back to what ran before the last swap that took effect
        back = await swap(root, rollback=True)
        assert back.outcome == "swapped", back
        assert back.from_dna == v2 and back.to_dna == v1, back
        assert versions(root) == dict.fromkeys(MEMBERS, "1")
        assert await which(root) == "1"
        assert history(root) == dict.fromkeys(MEMBERS, (v1, v2))  # twice goes forward again
        await bank(root).converge(expect_members=3)
        await bank(root).identical()


async def assert_no_crash_seen(root: Root, causes: list[str]) -> None:
    """Status, monitors and supervision saw no crash; each replica logged each rollback."""
    status = await control(root, StatusRequest())
    assert isinstance(status, StatusReply), status
    assert [r for r in status.restart_log if r.cell.startswith(f"{GROUP}/")] == [], (
        status.restart_log
    )
    rows = {c.name: c for c in status.cells}
    for i in MEMBERS:
        row = rows[f"{GROUP}/{i}"]
        assert row.restarts == 0, row
        assert row.last_exit is None and row.last_exit_at is None, row
        assert row.state == "running", row
        assert row.replica is not None and row.replica.error == "", row
        assert not row.replica.given_up, row
    await root.wait_celldowns_settled()
    assert root._watches.load("test-watcher") == len(MEMBERS)  # no CellDown delivered
    for i in MEMBERS:
        events = read_events(root.paths.log_dir / f"{GROUP}..{i}.events.jsonl")
        rolled = [e["cause"] for e in events if e["event"] == "swap_rolled_back"]
        assert rolled == causes, events


async def test_swap_replicated_new_version_failing_to_start_is_no_crash_of_the_replica(
    bwrap: None,
) -> None:
    async with bank_root("1") as (root, home):
        leader = await whole(root)
        await deposit_all(root)
        group = root._replicas.groups[GROUP]
        handle = group.handle
        for i in MEMBERS:  # monitors of each replica: the swaps' failures must not fire them
            root._watches.monitor("test-watcher", f"{GROUP}/{i}", alive=True)
        # 1. on_start raises: the first follower's new process never becomes ready
        (home / "bankcell.py").write_text(source("2", "start"))
        report = await swap(root, timeout=10.0)
        first = min(i for i in MEMBERS if i != leader)
        assert report.outcome == "rolled_back", report
        assert report.cause == (f"the new version of {GROUP}/{first} did not start: exit code 1: "
                                "RuntimeError in on_start: version 2 refuses to start"), report
        await whole(root)
        assert versions(root) == dict.fromkeys(MEMBERS, "1")
        await assert_no_crash_seen(root, [report.cause])
        # 2. serves, then crashes within its catch-up or probation (its supervisor restarts
        # it on the failing code until the swap stops it)
        leader = await whole(root)
        (home / "bankcell.py").write_text(source("3", "die"))
        died = await swap(root, timeout=10.0, grace=2.0)
        first = min(i for i in MEMBERS if i != leader)
        assert died.outcome == "rolled_back", died
        assert f"the new version of {GROUP}/{first} did not catch up: it exited" in died.cause
        assert "version 3 dies after it started" in died.cause, died
        await whole(root)
        assert versions(root) == dict.fromkeys(MEMBERS, "1")
        await assert_no_crash_seen(root, [report.cause, died.cause])
        # supervision untouched: the group was not restarted by its supervisor
        assert group.handle is handle and handle is not None and handle.running

"""Raft figures in the root's Prometheus endpoint (issue 14): per-replica gauges and counters.

The pure part (labels, leader-change counting, forgetting) runs without a
root; the live test scrapes a real root running a 3-replica bank under
bwrap with a real HTTP client and the official text-format parser, kills
the leader, and sees the figures follow.
"""

from __future__ import annotations

import shutil
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from bankload import GROUP, bank, bank_toml, deposit_all
from prometheus_client.parser import text_string_to_metric_families

from cellmesh.actors._metrics import DYNAMIC, MeshMetrics, SlotRow
from cellmesh.actors._metrics_http import replica_metrics_families
from cellmesh.actors.control import ReplicaStats
from cellmesh.testing.mesh import open_root

HERE = Path(__file__).resolve().parent


def rs(replica: int, term: int, leader: int | None) -> ReplicaStats:
    return ReplicaStats(replica=replica, role="follower", term=term, leader=leader,
                        commit_index=0, applied_index=0, last_index=0, voters=[], learners=[])


def row(name: str) -> SlotRow:
    return SlotRow(name=name, parent=None, spawned=False, running=True, restarts=0, pid=None,
                   rss=None, cpu_seconds=None)


def test_metrics_replicas_count_under_their_cell_and_leader_changes_are_counted() -> None:
    metrics = MeshMetrics(declared=frozenset({"bank"}))
    assert metrics.label("bank/2", None) == "bank"
    assert metrics.label("other/2", None) == DYNAMIC  # not a declared cell: no new label
    metrics.observe_leader("bank", 1, rs(1, 3, 0))  # the first report is no change
    metrics.observe_leader("bank", 1, rs(1, 3, 0))
    metrics.observe_leader("bank", 1, rs(1, 3, None))  # no leader known: nothing to count
    metrics.observe_leader("bank", 1, rs(1, 4, 2))
    metrics.observe_leader("bank", 1, rs(1, 5, 2))  # re-elected in a later term: a change
    metrics.observe_leader("nosuch", 1, rs(1, 9, 1))  # undeclared: never a label
    assert metrics.leader_changes == {("bank", 1): 2}
    # a replica that is gone (removed from the group) is forgotten
    metrics.sample([row("bank/0")])
    assert metrics.leader_changes == {}


@pytest.fixture
def bwrap(bwrap_usable: str | None) -> None:
    if bwrap_usable is not None:
        pytest.skip(bwrap_usable)


def scrape(address: tuple[str, int]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://{address[0]}:{address[1]}/metrics",
                                timeout=30) as response:
        text = response.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


async def scrape_until(address: tuple[str, int], done: Callable[[dict], bool], what: str) -> dict:
    with trio.fail_after(60):
        while True:
            samples = await trio.to_thread.run_sync(scrape, address)
            if done(samples):
                return samples
            await trio.sleep(0.2)  # replicas report once a second: poll the endpoint
    raise AssertionError(what)


def leaders(samples: dict) -> list[int]:
    return [i for i in range(3) if value(samples, "cellmesh_replica_role", cell=GROUP,
                                         replica=str(i), role="leader") == 1.0]


async def test_metrics_replicas_scrape_a_real_root_with_a_three_replica_group(
    bwrap: None,
) -> None:
    home = Path(tempfile.mkdtemp(prefix="cm-", dir="/tmp"))
    try:
        shutil.copy(HERE / "bankcell.py", home / "bankcell.py")
        async with open_root(home, bank_toml(3), sandbox="bwrap", stop_timeout=20,
                             metrics=("127.0.0.1", 0)) as root:
            address = root.metrics_address
            assert address is not None
            await deposit_all(root)

            def settled(samples: dict) -> bool:
                applied = [value(samples, "cellmesh_replica_applied_index", cell=GROUP,
                                 replica=str(i)) or 0 for i in range(3)]
                return len(leaders(samples)) == 1 and min(applied) >= 5

            samples = await scrape_until(address, settled, "one leader, every write applied")
            names = {name for name, _ in samples}
            for name in replica_metrics_families():
                assert name in names, name
            (leader,) = leaders(samples)
            for i in range(3):
                labels = {"cell": GROUP, "replica": str(i)}
                assert value(samples, "cellmesh_replica_given_up", **labels) == 0.0
                assert value(samples, "cellmesh_replica_lag_entries", **labels) is not None
                assert (value(samples, "cellmesh_replica_commit_index", **labels) or 0) >= 5
                roles = [value(samples, "cellmesh_replica_role", role=r, **labels)
                         for r in ("none", "leader", "follower", "candidate", "precandidate",
                                   "learner", "removed")]
                assert sorted(roles) == [0.0] * 6 + [1.0]
            term = value(samples, "cellmesh_replica_term", cell=GROUP, replica=str(leader))
            assert term is not None and term >= 1
            # the replicas count under their cell: no ~dynamic label for them
            cells = {dict(labels).get("cell") for _, labels in samples} - {None}
            assert cells == {GROUP}
            # the leader dies: the others report a new leader, in a later term
            await bank(root).kill(leader)

            def moved(samples: dict) -> bool:
                now = leaders(samples)
                survivors = [i for i in range(3) if i != leader]
                return len(now) == 1 and all(
                    (value(samples, "cellmesh_replica_leader_changes_total", cell=GROUP,
                           replica=str(i)) or 0) >= 1 for i in survivors
                ) and (value(samples, "cellmesh_replica_term", cell=GROUP,
                             replica=str(now[0])) or 0) > term

            await scrape_until(address, moved, "a new leader counted by the survivors")
    finally:
        shutil.rmtree(home, ignore_errors=True)

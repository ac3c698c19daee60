"""A replicated cell through the command line, as an operator runs it: a real root, real replicas.

``cellmesh up`` a manifest with ``replicas = 3``; ``status`` (table and
JSON) shows the replicas' Raft columns; ``kill X/1``, ``logs X/1``;
``replicas X 5`` grows the group, ``wipe X/2`` rebuilds one replica,
``replicas X 3`` shrinks it back; ``down`` leaves nothing behind.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_daemon import cellmesh, mesh_home

HERE = Path(__file__).resolve().parent
CELLS = HERE.parent / "actors" / "replicacells.py"

MANIFEST = """
[cells.grp]
dna = "replicacells.py"
entry = "replicacells:Observer"
replicas = 3
standby = false
start_timeout = 60
"""


@pytest.fixture
def home() -> Iterator[Path]:
    yield from mesh_home(CELLS, MANIFEST)


def status(home: Path) -> dict[str, object]:
    done = cellmesh(home, "status", "--json")
    assert done.returncode == 0, done.stderr
    doc: dict[str, object] = json.loads(done.stdout)
    return doc


def test_replicas_through_the_cli(home: Path) -> None:
    up = cellmesh(home, "up")
    assert up.returncode == 0, up.stderr
    # `replicas` with the current count waits for the group's leader and changes nothing
    same = cellmesh(home, "replicas", "grp", "3")
    assert same.returncode == 0, same.stderr
    assert same.stdout.strip() == "cellmesh: grp has 3 replicas (grp/0, grp/1, grp/2)"

    doc = status(home)
    rows = {c["name"]: c for c in doc["cells"]}  # type: ignore[attr-defined]
    assert sorted(rows) == ["grp/0", "grp/1", "grp/2"]
    (group,) = doc["groups"]  # type: ignore[misc]
    assert group["members"] == [0, 1, 2] and group["leader"] in (0, 1, 2)
    lead = f"grp/{group['leader']}"
    assert rows[lead]["replica"]["role"] == "leader"

    table = cellmesh(home, "status")
    assert table.returncode == 0
    header = next(line for line in table.stdout.splitlines() if line.startswith("CELL"))
    assert header.split()[-5:] == ["ROLE", "TERM", "COMMIT", "APPLIED", "LAG"]
    assert f"grp: 3 replicas (grp/0, grp/1, grp/2), leader {lead}" in table.stdout

    killed = cellmesh(home, "kill", "grp/1")
    assert killed.returncode == 0 and "killed grp/1 (pid" in killed.stdout, killed.stderr
    whole = cellmesh(home, "kill", "grp")
    assert whole.returncode == 1 and "is a replicated cell: name one replica" in whole.stderr
    logs = cellmesh(home, "logs", "grp/1")
    assert logs.returncode == 0 and logs.stdout.count("event started") >= 2

    grown = cellmesh(home, "replicas", "grp", "5")
    assert grown.returncode == 0, grown.stderr
    assert "grp: 3 -> 5 replicas; added grp/3, grp/4" in grown.stdout
    wiped = cellmesh(home, "wipe", "grp/2")
    assert wiped.returncode == 0, wiped.stderr
    assert "wiped grp/2" in wiped.stdout
    shrunk = cellmesh(home, "replicas", "grp", "3")
    assert shrunk.returncode == 0, shrunk.stderr
    assert "grp: 5 -> 3 replicas; removed grp/3, grp/4" in shrunk.stdout
    doc = status(home)
    assert sorted(c["name"] for c in doc["cells"]) == ["grp/0", "grp/1", "grp/2"]  # type: ignore[attr-defined]
    bad = cellmesh(home, "replicas", "grp", "4")
    assert bad.returncode == 2 and "expected an odd number from 1 to 7, got 4" in bad.stderr

    down = cellmesh(home, "down", "--timeout", "10")
    assert down.returncode == 0, down.stderr
    assert not list((home / "run").glob("*.sock"))
    assert not (home / "run" / ".replicas" / "grp").exists()


def test_up_names_a_plain_cells_data_under_a_replicated_name(home: Path) -> None:
    """A data dir with data but no group.json is refused (docs/root.md): the refusal's
    text -- not "Exceptions from Trio nursery" -- is what `up` prints, what the root's
    log says and what `status` shows from the root's last words."""
    data = home / "data" / "grp"
    data.mkdir(parents=True)
    (data / "state.db").write_text("x")
    cause = (f"{data}: holds data but no group.json: it belongs to a cell that was not "
             "replicated (or the record was lost); move it away to start the group empty")
    failed = cellmesh(home, "up")
    assert failed.returncode == 1
    lines = failed.stderr.splitlines()
    assert lines[0] == f"cellmesh: error: the mesh did not start: {cause}", failed.stderr
    assert lines[-1].startswith("cellmesh: the root's log: ")
    log = (home / "logs" / "root.log").read_text()
    assert f"cellmesh: root: {cause}" in log and "Trio nursery" not in log
    status = cellmesh(home, "status")
    assert status.returncode == 1
    assert f"GroupRecordError: {cause}" in status.stderr, status.stderr
    assert (data / "state.db").read_text() == "x"  # refused, not touched

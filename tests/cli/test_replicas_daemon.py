"""A replicated cell through the command line, as an operator runs it: a real root, real replicas.

``cellmesh up`` a manifest with ``replicas = 3``; ``status`` (table and
JSON) shows the replicas' Raft columns; ``kill X/1``, ``logs X/1``;
``replicas X 5`` grows the group, ``wipe X/2`` rebuilds one replica,
``replicas X 3`` shrinks it back; ``down`` leaves nothing behind.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_daemon import cellmesh, env_for, mesh_home

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


def _until(home: Path, ready: Callable[[dict[str, object]], bool], timeout: float = 90) -> None:
    """Wait until ``status --json`` satisfies ``ready``."""
    deadline = time.monotonic() + timeout
    while True:
        done = cellmesh(home, "status", "--json")
        if done.returncode == 0 and ready(json.loads(done.stdout)):
            return
        assert time.monotonic() < deadline, done.stdout + done.stderr
        time.sleep(0.2)


def _group(doc: dict[str, object]) -> dict[str, object]:
    (group,) = doc["groups"]  # type: ignore[misc]
    return group  # type: ignore[no-any-return]


def _record(home: Path) -> tuple[object, ...]:
    rec = json.loads((home / "data" / "grp" / "group.json").read_text())
    return rec["members"], rec["joining"], rec["next_id"]


def _growing_held(home: Path) -> tuple[subprocess.Popen[str], Path]:
    """`up`, then `replicas grp 5` held at its first add: grp/3 waits to start while the
    returned file exists. The running `replicas` command and that file."""
    assert cellmesh(home, "up").returncode == 0
    _until(home, lambda doc: _group(doc)["leader"] is not None)
    hang = home / "data" / "grp" / "3" / "hang"
    hang.parent.mkdir(parents=True)
    hang.write_text("")
    grow = subprocess.Popen(
        [sys.executable, "-m", "cellmesh", "replicas", "grp", "5"], env=env_for(home),
        cwd=home, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    _until(home, lambda doc: "adding grp/3" in str(_group(doc)["change"]))
    return grow, hang


def test_down_during_a_grow_keeps_its_timeout_and_the_next_up_completes_it(home: Path) -> None:
    """`down --timeout 4` while `replicas grp 5` adds a replica: the root stops within the
    timeout (it took 11-23 s: the add's undo waited 10 s for a leader of the group the stop
    had just ended), `replicas` says the root stopped on request and what became of the
    change (it said the root "is running but did not serve this request"), the record
    keeps the replica it was adding as joining, and the next `up` completes its join and
    brings the group back to the manifest's 3, every replica agreeing on the voters."""
    grow, hang = _growing_held(home)  # grp/3 will not start: the add waits for it
    began = time.monotonic()
    down = cellmesh(home, "down", "--timeout", "4")
    took = time.monotonic() - began
    assert down.returncode == 0 and "root stopped (pid" in down.stdout, down.stdout + down.stderr
    assert took < 9, f"down --timeout 4 took {took:.1f} s"
    out, err = grow.communicate(timeout=120)
    assert grow.returncode == 1, out + err
    # The root's answer, when it could still send it (its stop ended grp/3's start),
    # else what the client knows: the root stopped on request while serving it.
    said = ("cellmesh: error: grp: adding grp/3 was cut short: the group stopped (the root "
            "stops, or the group restarts); grp/3 stays recorded as joining: the group's "
            "next start completes its join, then brings the group to its target")
    stopped = ("stopped on request (`cellmesh down`, or a signal) while it served this "
               "request: the change stopped part-way: the next `up` completes the join of a "
               "replica it was adding, then applies the manifest's `replicas`")
    assert err.startswith(said) or stopped in err, err
    assert "did not serve this request" not in err
    assert _record(home) == ([0, 1, 2, 3], [3], 4)  # grp/3 joining: for the next start
    assert "adding grp/3 was cut short" in (home / "logs" / "root.log").read_text()

    hang.unlink()  # grp/3 can start now
    assert cellmesh(home, "up").returncode == 0

    def settled(doc: dict[str, object]) -> bool:
        group = _group(doc)
        rows = doc["cells"]
        return (group["members"] == [0, 1, 2] and group["change"] == ""
                and group["leader"] is not None
                and all(row["replica"]["voters"] == [0, 1, 2]  # type: ignore[index]
                        for row in rows))  # type: ignore[attr-defined]

    _until(home, settled)
    assert _record(home) == ([0, 1, 2], [], 4)
    assert not (home / "data" / "grp" / "3").exists()  # removed again, its data deleted


def test_ctrl_c_of_replicas_does_not_stop_the_change(home: Path) -> None:
    """Ctrl-C of `cellmesh replicas grp 5` while it adds grp/3: the command says the
    change carries on in the root, and it does: the group reaches 5 voters (cancelled
    with its client, the change stopped at an even 4, silently)."""
    grow, hang = _growing_held(home)
    grow.send_signal(signal.SIGINT)
    out, err = grow.communicate(timeout=60)
    assert grow.returncode == 130, out + err
    assert "cellmesh: interrupted; the change carries on in the root" in err, (out, err)
    hang.unlink()  # grp/3 starts now

    def grown(doc: dict[str, object]) -> bool:
        group = _group(doc)
        return (group["members"] == [0, 1, 2, 3, 4] and group["change"] == ""
                and all(row["replica"]["voters"] == [0, 1, 2, 3, 4]  # type: ignore[index]
                        for row in doc["cells"]))  # type: ignore[attr-defined]

    _until(home, grown)
    log = (home / "logs" / "root.log").read_text()
    assert "the change of grp to 5 replicas: its client went away; it carries on" in log
    assert "the change of grp to 5 replicas, whose client went away, ended: " in log

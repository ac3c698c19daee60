"""``cellmesh up`` refused because of a replicated cell's data: the user reads the cause.

A data directory ``$CELL_HOME/data/X/`` holding data but no ``group.json``
(a cell that was not replicated, now declared ``replicas = 3``) is refused
(docs/root.md, "Replicated cells"). The refusal's text -- not "Exceptions
from Trio nursery" -- is what ``cellmesh up`` prints, what the root's log
says and what ``cellmesh status`` shows from the root's last words.
"""

from __future__ import annotations

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
"""


@pytest.fixture
def home() -> Iterator[Path]:
    yield from mesh_home(CELLS, MANIFEST)


def test_up_names_a_plain_cells_data_under_a_replicated_name(home: Path) -> None:
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

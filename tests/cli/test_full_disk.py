"""A root whose disk fills up keeps running: a full disk loses log lines, not the mesh.

Real processes, ``CELL_HOME`` on a small tmpfs that the test fills. The root
logs from everywhere, its failure guard included; a log line it could not
write used to raise out of the root and stop it, and every cell with it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fulldisk import NEEDS_ROOT, fill, small_tmpfs
from test_daemon import CELLS, cellmesh

MANIFEST = """
[supervisor]
intensity = 50
children = ["echo"]

[cells.echo]
dna = "rootcells.py"
entry = "rootcells:Echoer"
"""

pytestmark = NEEDS_ROOT


@pytest.fixture
def small_home() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="cm-full-", dir="/tmp"))
    try:
        with small_tmpfs(base / "home", "24m") as home:
            shutil.copy(CELLS, home / CELLS.name)
            (home / "cellmesh.toml").write_text(MANIFEST)
            try:
                yield home
            finally:
                cellmesh(home, "down", "--timeout", "2")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _status(home: Path) -> dict[str, object]:
    status = cellmesh(home, "status", "--json")
    assert status.returncode == 0, status.stderr
    doc: dict[str, object] = json.loads(status.stdout)
    return doc


def _echo_pid(home: Path, not_pid: int | None = None) -> int:
    """The running echo cell's pid, once it is one other than ``not_pid``."""
    deadline = time.monotonic() + 60
    while True:
        cells = {c["name"]: c for c in _status(home)["cells"]}  # type: ignore[attr-defined]
        echo = cells["echo"]
        if echo["state"] == "running" and echo["pid"] and echo["pid"] != not_pid:
            return int(echo["pid"])
        assert time.monotonic() < deadline, echo
        time.sleep(0.1)


def test_the_root_survives_a_full_disk_and_says_how_many_log_lines_it_lost(
    small_home: Path,
) -> None:
    home = small_home
    up = cellmesh(home, "up")
    assert up.returncode == 0, up.stderr
    root_pid = _status(home)["root"]["pid"]  # type: ignore[index]
    first = _echo_pid(home)

    # tmpfs gives a file whole pages: pad root.log to a page boundary, so that
    # its next line needs a page of the full disk.
    root_log = home / "logs" / "root.log"
    with open(root_log, "ab") as f:
        f.write(b"#" * (-(root_log.stat().st_size + 1) % 4096) + b"\n")
    filler = fill(home)
    for _ in range(3):  # each kill makes the root log the exit and the restart
        killed = cellmesh(home, "kill", "echo")
        assert killed.returncode == 0, killed.stderr
        first = _echo_pid(home, not_pid=first)
    assert _status(home)["root"]["pid"] == root_pid  # the same root, still serving
    assert "exited abnormally" not in root_log.read_text().rpartition("#")[2]  # lost

    filler.unlink()  # room again: the next line says how many were lost
    killed = cellmesh(home, "kill", "echo")
    assert killed.returncode == 0, killed.stderr
    _echo_pid(home, not_pid=first)
    log = root_log.read_text()
    assert "log line(s) lost: could not write them ([Errno 28] No space left on device)" in log

    down = cellmesh(home, "down", "--timeout", "5")
    assert down.returncode == 0, down.stderr
    assert not list((home / "logs").glob(".root.last-words.json.*"))  # no partial temp file

"""The root raises its soft open-files limit for its mesh, and warns when it cannot.

Run in a child process started under a low soft limit (as a login shell or
systemd's ``LimitNOFILE=1024:524288`` gives), so this test process is untouched.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, resource, sys
from pathlib import Path
from cellmesh.actors._nofile import descriptors_needed, raise_open_files
from cellmesh.actors.manifest import parse_manifest
cells = int(sys.argv[1])
text = "".join(f'[cells.c{i}]\\ndna = "x.py"\\nentry = "x:C"\\n' for i in range(cells))
manifest = parse_manifest(text, path=Path("/tmp/cellmesh.toml"))
warning = raise_open_files(manifest)
print(json.dumps({"limits": resource.getrlimit(resource.RLIMIT_NOFILE),
                  "need": descriptors_needed(manifest), "warning": warning}))
"""


def _run(cells: int, soft: int, hard: int) -> dict[str, object]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(cells)], capture_output=True, text=True,
        timeout=60, check=True, preexec_fn=limit, cwd=Path(__file__).parent,
    )
    doc: dict[str, object] = json.loads(out.stdout)
    return doc


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    doc = _run(cells=10, soft=256, hard=4096)
    assert doc["limits"] == [4096, 4096]
    assert doc["warning"] is None


def test_a_hard_limit_too_low_for_the_manifest_is_said_with_what_it_needs() -> None:
    doc = _run(cells=100, soft=256, hard=1024)
    assert doc["limits"] == [1024, 1024]
    warning = doc["warning"]
    assert isinstance(warning, str)
    assert "open-files limit is 1024 descriptors" in warning
    assert f"may need about {doc['need']}" in warning and "ulimit -Hn" in warning

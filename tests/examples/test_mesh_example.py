"""The README's main job, the example mesh, runs end to end as a user would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_mesh_example_runs_and_leaves_nothing() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELL_")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "mesh" / "run.py")],
        capture_output=True, text=True, timeout=300, check=False, env=env,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "200 orders, 200 seen by the frontend" in out
    assert "the pricer went down" in out  # it crashes every 40 quotes; monitors report it
    assert "killed ledger" in out
    assert "processes of the mesh left after down: none" in out
    assert "mesh: OK" in out

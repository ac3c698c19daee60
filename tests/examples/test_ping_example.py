"""The README's ping example runs end to end as a user would run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ping_example_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "ping" / "run.py")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "fire(Ping(42)) -> Pong(n=42)" in out
    assert "1000 pongs, in order" in out
    assert "pong: stopped" in out  # the cell drained and shut down on SIGTERM

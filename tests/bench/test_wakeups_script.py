"""scripts/wakeups.py (the cross-core wake-up measurement the README quotes) runs and reports."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "wakeups.py"


def test_wakeups_script_reports_both_modes_free_and_pinned() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--samples", "50"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "usable CPUs" in done.stdout
    for mode in ("epoll", "blocking"):
        line = next(x for x in done.stdout.splitlines() if x.strip().startswith(mode))
        numbers = [float(n) for n in re.findall(r"\d+\.\d", line)]
        assert len(numbers) == 4 and all(n > 0 for n in numbers), line


def test_wakeups_script_refuses_too_few_samples() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--samples", "3"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "--samples must be at least 10" in done.stderr

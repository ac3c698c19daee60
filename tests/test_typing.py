"""Typed replies hold for a type checker: ``mypy --strict`` on real programs.

``tests/typing/typed_ok.py`` must check clean, and each of its
``reveal_type(...)  # R: <type>`` lines must reveal exactly that type;
``tests/typing/typed_bad.py`` must fail with exactly the errors its
``# E: <code>`` comments name, on those lines and no others. The example
mesh that ``cellmesh init`` writes (``examples/hello``, with its tests) must
check clean too.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TYPING = ROOT / "tests" / "typing"
HELLO = ROOT / "examples" / "hello"


def marks(path: Path, tag: str) -> dict[int, str]:
    """Line -> text after ``# <tag>: `` for every marked line of ``path``."""
    out: dict[int, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        m = re.search(rf"# {tag}: (.+)$", line)
        if m:
            out[number] = m.group(1).strip()
    return out


def test_mypy_strict_sees_declared_reply_types_and_refuses_misuse(tmp_path: Path) -> None:
    ok, bad = TYPING / "typed_ok.py", TYPING / "typed_bad.py"
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--show-error-codes",
         "--cache-dir", str(tmp_path / "cache"), str(ok), str(bad),
         str(HELLO / "client.py"), str(HELLO / "test_hello.py"), str(HELLO / "cells")],
        capture_output=True, text=True, timeout=600, check=False, cwd=ROOT,
    )
    lines = result.stdout.splitlines()
    reveal = re.compile(r".*typed_ok\.py:(\d+): note: Revealed type is \"(.*)\"$")
    revealed = {int(m.group(1)): m.group(2) for line in lines if (m := reveal.match(line))}
    errors = {
        (m.group(1), int(m.group(2)), m.group(3))
        for line in lines if (m := re.match(r"(.*?):(\d+): error: .*\[([a-z-]+)\]$", line))
    }
    assert revealed == marks(ok, "R"), result.stdout
    expected = {(str(bad.relative_to(ROOT)), n, code) for n, code in marks(bad, "E").items()}
    assert errors == expected, result.stdout  # nothing from typed_ok.py or examples/hello
    assert result.returncode == 1  # the bad program must fail

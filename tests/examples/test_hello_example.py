"""The hello example: it is exactly what `cellmesh init` writes, its tests pass, and
docs/testing.md shows them verbatim."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from cellmesh.cli._scaffold import template_files

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "examples" / "hello"


def test_hello_example_is_the_init_template() -> None:
    files = {
        str(p.relative_to(HELLO)): p.read_bytes() for p in HELLO.rglob("*")
        if p.is_file() and p.name != "test_hello.py" and "__pycache__" not in p.parts
        and ".pytest_cache" not in p.parts
    }
    assert files == template_files()


def test_testing_doc_shows_the_example_verbatim() -> None:
    doc = (ROOT / "docs" / "testing.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```\n", doc, flags=re.DOTALL)
    assert (HELLO / "test_hello.py").read_text() in blocks


def test_the_documented_mesh_tests_pass() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELL_")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HELLO)],
        capture_output=True, text=True, timeout=300, check=False, env=env, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout

"""The hello example: it is exactly what `cellmesh init` writes, its tests pass, and
docs/testing.md shows them verbatim."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cellmesh
from cellmesh import aio
from cellmesh.cli._scaffold import template_files

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "examples" / "hello"


def test_hello_example_is_the_init_template() -> None:
    files = {
        str(p.relative_to(HELLO)): p.read_bytes() for p in HELLO.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and ".pytest_cache" not in p.parts
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


def test_asyncio_and_blocking_clients_call_the_running_mesh() -> None:
    """A real root and real cell processes (``cellmesh up``), called from asyncio and
    from blocking code, typed replies included."""
    sys.path.insert(0, str(HELLO))
    try:
        from cells.protocol import Count, Greet, Greeting
    finally:
        sys.path.remove(str(HELLO))
    home = Path(tempfile.mkdtemp(prefix="cm-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELL_")}
    env.update(CELL_HOME=str(home), CELL_SANDBOX="host")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cellmesh", *args], env=env,
                              capture_output=True, text=True, timeout=180, check=False)

    up = cli("up", "-f", str(HELLO / "cellmesh.toml"))
    assert up.returncode == 0, up.stderr
    socket_dir = home / "run"
    try:
        async def main() -> list[Greeting]:
            async with aio.Synapse.grow("greeter", socket_dir=socket_dir) as greeter:
                first = await greeter.fire(Greet("ada"))
                rest = await asyncio.gather(*(greeter.fire(Greet("ada")) for _ in range(5)))
                return [first, *rest]

        greetings = asyncio.run(main())
        assert sorted(g.visits for g in greetings) == [1, 2, 3, 4, 5, 6]
        with cellmesh.connect("store", socket_dir=socket_dir) as store:
            assert store.fire(Count("ada")).visits == 7
    finally:
        down = cli("down")
        shutil.rmtree(home, ignore_errors=True)
    assert down.returncode == 0, down.stderr

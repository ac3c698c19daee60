"""The README's quick start works from an installed wheel, without the repository.

One (slow) test: build the wheel from a copy of the source tree, install it
into a fresh venv in a temporary directory (dependencies from the package
index), and there run `cellmesh init`, `cellmesh up`, the client,
`cellmesh status`, `cellmesh down` and the tests init wrote, as a pip user
would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cm-wheel-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 300
        ) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.mark.slow
def test_the_quick_start_works_from_an_installed_wheel(workdir: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CELL_", "PYTHON", "VIRTUAL_ENV"))}
    source = workdir / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".venv", ".git", "__pycache__", "*.egg-info", "build", "dist", ".*_cache",
        ".hypothesis", "tests", "examples", "scripts", "docs",
    ))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(workdir / "dist"),
         str(source)], cwd=workdir, env=env)
    (wheel,) = (workdir / "dist").glob("cellmesh-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "cellmesh/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/ATTRIBUTION") for n in names)
    assert "cellmesh/cli/_init_template/cells/protocol.py.tmpl" in names
    assert "cellmesh/cli/_init_template/test_hello.py.tmpl" in names
    assert not any(n.startswith(("tests/", "examples/")) for n in names)

    run([sys.executable, "-m", "venv", str(workdir / "venv")], cwd=workdir, env=env)
    bin_dir = workdir / "venv" / "bin"
    run([str(bin_dir / "pip"), "install", "-q", str(wheel)], cwd=workdir, env=env, timeout=600)

    user = {**env, "PATH": f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}",
            "CELL_HOME": str(workdir / "home"), "CELL_SANDBOX": "host"}
    cellmesh = str(bin_dir / "cellmesh")
    python = str(bin_dir / "python")
    about = run([cellmesh, "--about"], cwd=workdir, env=user)
    assert "Copyright (c) 2025 Leif Rydenfalk" in about.stdout
    run([cellmesh, "init", "hello"], cwd=workdir, env=user)
    try:
        up = run([cellmesh, "up", "-f", "hello/cellmesh.toml"], cwd=workdir, env=user)
        assert "root up (pid" in up.stdout
        first = run([python, "hello/client.py"], cwd=workdir, env=user)
        assert first.stdout == "Hello, world! You have visited once.\n"
        again = run([python, str(workdir / "hello" / "client.py"), "world"], cwd=Path("/"),
                    env=user)
        assert again.stdout == "Hello, world! You have visited 2 times.\n"
        status = run([cellmesh, "status"], cwd=workdir, env=user)
        assert "greeter" in status.stdout and "store" in status.stdout
        logs = run([cellmesh, "logs", "store"], cwd=workdir, env=user)
        assert "store: ready" in logs.stdout
    finally:
        down = subprocess.run([cellmesh, "down"], cwd=workdir, env=user, capture_output=True,
                              text=True, timeout=120, check=False)
    assert down.returncode == 0 and "root stopped" in down.stdout, down.stderr

    # The tests init wrote pass as the quick start says, with only pytest and
    # pytest-trio added (no configuration: they mark themselves).
    run([str(bin_dir / "pip"), "install", "-q", "pytest", "pytest-trio"], cwd=workdir, env=env,
        timeout=600)
    tests = run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "hello"], cwd=workdir,
                env={k: v for k, v in user.items() if k != "CELL_HOME"})
    assert "4 passed" in tests.stdout, tests.stdout

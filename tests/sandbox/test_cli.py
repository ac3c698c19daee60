"""``cellmesh sandbox check`` and ``cellmesh sandbox exec``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cellmesh.cli import main


@pytest.fixture(autouse=True)
def _cell_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CELL_SANDBOX", raising=False)
    monkeypatch.delenv("CELL_CGROUP_PARENT", raising=False)


def test_check_reports_the_host(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["sandbox", "check"]) == 0
    out = capfd.readouterr().out
    for label in ("bwrap", "user namespaces", "cgroup v2", "seccomp", "CELL_SANDBOX=auto"):
        assert label in out
    assert main(["sandbox", "check", "--json"]) == 0
    report = json.loads(capfd.readouterr().out)
    assert report["auto_backend"] in ("bwrap", "host")
    assert set(report["limit_mechanisms"]) == {"memory", "cpu", "pids", "open_files"}


@pytest.mark.parametrize("backend", ["host", "bwrap"])
def test_exec_shows_a_cells_view(
    backend: str, capfd: pytest.CaptureFixture[str], request: pytest.FixtureRequest
) -> None:
    if backend == "bwrap":
        request.getfixturevalue("bwrap_path")
    code = "import os, socket; print(os.environ['CELL_NAME'], len(socket.if_nameindex()))"
    rc = main(
        ["sandbox", "exec", "--backend", backend, "--env", "X=1", "--", "python3", "-c", code]
    )
    out = capfd.readouterr().out
    assert rc == 0
    name, n_ifaces = out.split()
    assert name.startswith("exec-")
    if backend == "bwrap":
        assert n_ifaces == "1"  # only lo


def test_exec_passes_the_exit_code_and_reports_limits(
    capfd: pytest.CaptureFixture[str],
) -> None:
    assert main(["sandbox", "exec", "--backend", "host", "--", "sh", "-c", "exit 7"]) == 7
    code = "import os\ntry:\n    b = bytearray(1 << 30)\nexcept MemoryError:\n    os._exit(137)"
    rc = main(["sandbox", "exec", "--backend", "host", "--mem", "64M", "--", "python3", "-c", code])
    assert rc == 137
    assert "limit (memory)" in capfd.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["sandbox", "exec"],
        ["sandbox", "exec", "--mem", "12X", "--", "true"],
        ["sandbox", "exec", "--backend", "docker", "--", "true"],
        ["sandbox", "exec", "--env", "NOEQUALS", "--", "true"],
        ["sandbox", "exec", "--data", "relative", "--", "true"],
        ["sandbox", "exec", "--data", "/nonexistent/cellmesh-test", "--", "true"],
        ["sandbox", "exec", "--cpu", "1e308", "--", "true"],
        ["sandbox", "exec", "--pids", "99999999999999999", "--", "true"],
    ],
)
def test_exec_bad_usage_exits_2(argv: list[str], capfd: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capfd.readouterr().err
    assert "error" in err and "Traceback" not in err
    assert not Path("/nonexistent/cellmesh-test").exists()  # a typo makes no directory
    if "--backend" in argv:
        assert "--backend: 'docker' is not one of" in err  # the flag, not CELL_SANDBOX

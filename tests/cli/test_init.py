"""`cellmesh init`: what it writes, and a clear error (exit 2, nothing left) where it cannot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cellmesh.cli._scaffold import template_files, write_mesh
from cellmesh.errors import ConfigError


def init(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cellmesh", "init", *args],
        capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL, timeout=120,
    )


def test_init_writes_the_template_and_never_overwrites(tmp_path: Path) -> None:
    written = write_mesh(tmp_path / "hello")
    assert sorted(p.relative_to(tmp_path / "hello").as_posix() for p in written) == sorted(
        template_files()
    )
    with pytest.raises(ConfigError, match=r"already has cellmesh\.toml"):
        write_mesh(tmp_path / "hello")


@pytest.mark.parametrize(
    ("where", "said"),
    [
        ("afile/sub", "cannot write {base}/afile/sub/cellmesh.toml: Not a directory"),
        ("afile", "{base}/afile exists and is not a directory"),
        ("/proc/nope", "cannot write /proc/nope/cellmesh.toml: No such file or directory"),
    ],
)
def test_init_where_it_cannot_write_is_one_line_and_exit_2(
    tmp_path: Path, where: str, said: str
) -> None:
    (tmp_path / "afile").write_text("x")
    target = where if where.startswith("/") else str(tmp_path / where)
    result = init(target)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == "cellmesh: error: DIRECTORY: " + said.format(base=tmp_path)
    assert "Traceback" not in result.stderr


def test_a_failed_init_leaves_no_file_behind(tmp_path: Path) -> None:
    target = tmp_path / "mesh"
    target.mkdir()
    (target / "cells").write_text("in the way")  # the template's cells/ cannot be made
    with pytest.raises(ConfigError, match="cannot write"):
        write_mesh(target)
    assert sorted(p.name for p in target.iterdir()) == ["cells"]


@pytest.mark.parametrize(("name", "hint"), [
    ("sp ace", "cellmesh up -f 'sp ace/cellmesh.toml'"),
    ("-dash", "cellmesh up -f ./-dash/cellmesh.toml"),
])
def test_inits_next_commands_can_be_pasted_as_printed(
    tmp_path: Path, name: str, hint: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cellmesh", "init", "--", name], cwd=tmp_path,
        capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f"  {hint}\n" in result.stdout
    assert (tmp_path / name / "cellmesh.toml").is_file()


def test_init_of_an_empty_name_is_refused_not_the_current_directory(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cellmesh", "init", ""], cwd=tmp_path,
        capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "cellmesh: error: DIRECTORY: is empty; name the directory to write the mesh into"
    )
    assert list(tmp_path.iterdir()) == []

"""CELL_HOME and the data dir cannot be turned against the host (issue 10 item 7).

The attack: with ``CELL_HOME`` writable by another user, ``data/<cell>`` was
planted as a symlink to a root-owned directory, whose files were then chowned
to 65534 and bound read-write into the cell. Now the home tree is refused
unless it is ours and not writable by others, and neither the chown nor the
bind ever follows a symlink.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from cellmesh.config import Paths, ensure_home
from cellmesh.errors import ConfigError
from cellmesh.sandbox import CellBackend, CellSpec, SandboxConfigError
from cellmesh.sandbox._safedir import hand_over, open_data_dir

from .conftest import run_probe

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown)")


def home_paths(tmp_path: Path) -> Paths:
    return Paths.from_env({"CELL_HOME": str(tmp_path / "home")})


def test_ensure_home_creates_the_tree_private(tmp_path: Path) -> None:
    paths = home_paths(tmp_path)
    ensure_home(paths)
    for path in (paths.home, paths.socket_dir, paths.data_dir, paths.cache_dir, paths.log_dir):
        assert path.is_dir() and not path.is_symlink()
        assert path.stat().st_mode & 0o022 == 0
    assert paths.socket_dir.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("sub", ["home", "data", "cache", "logs", "run"])
def test_ensure_home_refuses_a_directory_others_can_write(tmp_path: Path, sub: str) -> None:
    paths = home_paths(tmp_path)
    ensure_home(paths)
    target = paths.home if sub == "home" else paths.home / sub
    os.chmod(target, 0o777)
    with pytest.raises(ConfigError) as info:
        ensure_home(paths)
    assert info.value.source == str(target)
    assert "writable by group and others" in info.value.problem


@pytest.mark.parametrize("sub", ["data", "logs", "cache"])
def test_ensure_home_refuses_a_symlinked_directory(tmp_path: Path, sub: str) -> None:
    paths = home_paths(tmp_path)
    ensure_home(paths)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (paths.home / sub).rmdir()
    (paths.home / sub).symlink_to(elsewhere)
    with pytest.raises(ConfigError) as info:
        ensure_home(paths)
    assert info.value.source == str(paths.home / sub)
    assert "symlink" in info.value.problem


@root_only
def test_ensure_home_refuses_a_home_owned_by_another_user(tmp_path: Path) -> None:
    paths = home_paths(tmp_path)
    paths.home.mkdir(mode=0o755)
    os.chown(paths.home, 65534, 65534)
    with pytest.raises(ConfigError, match="owned by uid 65534") as info:
        ensure_home(paths)
    assert info.value.source == str(paths.home)


def test_open_data_dir_refuses_a_planted_symlink(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.mkdir()
    (data / "cell").symlink_to(victim)
    with pytest.raises(SandboxConfigError, match="symlink"):
        open_data_dir(data / "cell", owners={os.getuid()})


def test_open_data_dir_refuses_a_parent_others_can_write(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    os.chmod(data, 0o777)
    with pytest.raises(SandboxConfigError, match="not writable by group or others"):
        open_data_dir(data / "cell", owners={os.getuid()})


@root_only
def test_hand_over_never_follows_a_symlink_inside(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "shadow").write_text("root only")
    cell = data / "cell"
    cell.mkdir()
    (cell / "sub").mkdir()
    (cell / "sub" / "file").write_text("x")
    (cell / "to-dir").symlink_to(precious)
    (cell / "sub" / "to-file").symlink_to(precious / "shadow")
    fd = open_data_dir(cell, owners={0})
    try:
        hand_over(fd, 65534)
    finally:
        os.close(fd)
    inside = ("", "sub", "sub/file", "to-dir", "sub/to-file")
    for path in (cell / rel for rel in inside):
        assert path.lstat().st_uid == 65534
    assert precious.stat().st_uid == 0
    assert (precious / "shadow").stat().st_uid == 0


def test_a_data_dir_planted_as_a_symlink_is_never_bound_or_chowned(
    real_backend: CellBackend, paths: Paths
) -> None:
    """The issue's attack against a real spawn (under bwrap, as nobody when root)."""
    victim = paths.home.parent / "root-owned"
    victim.mkdir(mode=0o755)
    (victim / "secret").write_text("do not touch")
    paths.data_dir.mkdir(mode=0o700, parents=True)
    (paths.data_dir / "evil").symlink_to(victim)
    real_backend.create(
        CellSpec(name="evil", argv=[sys.executable, "-c", "pass"], data_dir=paths.data_dir / "evil")
    )
    try:
        with pytest.raises(SandboxConfigError, match="symlink"):
            real_backend.spawn("evil")
    finally:
        real_backend.destroy("evil", grace=0.5)
    assert (victim / "secret").stat().st_uid == os.getuid()
    assert victim.stat().st_uid == os.getuid()


def test_a_real_data_dir_is_still_bound_writable(real_backend: CellBackend, paths: Paths) -> None:
    code = """
    import json, os
    d = os.environ["CELL_DATA_DIR"]
    open(os.path.join(d, "note"), "w").write("hi")
    print(json.dumps({"files": sorted(os.listdir(d))}))
    """
    status, out = run_probe(real_backend, "keeper", code, data_dir=paths.data_dir / "keeper")
    assert status.reason == "exit"
    assert out == {"files": ["note"]}
    assert (paths.data_dir / "keeper" / "note").read_text() == "hi"


@root_only
@pytest.mark.parametrize("swap", ["other-dir", "symlink"])
def test_a_pinned_bind_refuses_a_source_swapped_after_the_check(tmp_path: Path, swap: str) -> None:
    """The child binds the data dir only if it is still the inode that was checked."""
    from cellmesh.sandbox import SpawnError, WorkloadEnv
    from cellmesh.sandbox._spawn import spawn_isolated_workload

    checked = tmp_path / "data"
    checked.mkdir()
    st = checked.stat()
    stand_in = tmp_path / "stand-in"
    stand_in.mkdir()
    # After the check, the name now points elsewhere.
    checked.rename(tmp_path / "moved")
    if swap == "symlink":
        checked.symlink_to(tmp_path / "moved")
    else:
        checked.mkdir()
    with pytest.raises(SpawnError, match="pre-exec"):
        spawn_isolated_workload(
            ["/bin/true"], WorkloadEnv(), private_binds=[(checked, stand_in)],
            pinned={checked: (st.st_dev, st.st_ino)},
        )
    # The unswapped directory binds fine.
    wl = spawn_isolated_workload(
        ["/bin/true"], WorkloadEnv(), private_binds=[(tmp_path / "moved", stand_in)],
        pinned={tmp_path / "moved": (st.st_dev, st.st_ino)},
    )
    assert wl.wait(30) == 0
    wl.close()


@root_only
def test_a_data_dir_that_cannot_be_handed_over_fails_that_spawn_naming_it(
    bwrap_backend: CellBackend, paths: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only mount (EROFS) under a cell's data dir: a SandboxError naming the
    directory and the cause, as a failed start of that cell (not an OSError that
    takes its root down)."""
    import errno

    from cellmesh.sandbox import _bwrap

    def read_only(fd: int, uid: int) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(_bwrap, "hand_over", read_only)
    data = paths.data_dir / "stuck"
    _spawn_fails(bwrap_backend, CellSpec(name="stuck", argv=[sys.executable, "-c", "pass"],
                                         data_dir=data),
                 rf"the data dir {data} cannot be handed to the cell's uid \d+: "
                 r"Read-only file system")


def _spawn_fails(backend: CellBackend, spec: CellSpec, match: str) -> None:
    """``spec``'s spawn raises a SandboxError matching ``match`` (the cell is destroyed)."""
    from cellmesh.sandbox import SandboxError

    backend.create(spec)
    try:
        with pytest.raises(SandboxError, match=match):
            backend.spawn(spec.name)
    finally:
        backend.destroy(spec.name, grace=0.5)


@root_only
def test_a_tmpdir_the_cells_uid_cannot_reach_is_named(
    bwrap_backend: CellBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bwrap runs cells as an unprivileged uid, which must reach the runtime dirs
    made under TMPDIR: a private TMPDIR fails the start naming it, not with bwrap's
    'Can't find source path'."""
    import tempfile

    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    _spawn_fails(bwrap_backend, CellSpec(name="lost", argv=[sys.executable, "-c", "pass"]),
                 r"\(TMPDIR\).*cannot be searched by uid \d+.*such as /tmp")

"""The bwrap command line: mount order matters (bwrap applies mounts in order)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cellmesh.sandbox import _bwrap
from cellmesh.sandbox._spec import CellSpec


def test_runtime_under_tmp_is_bound_after_the_private_tmp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A checkout in /tmp (as CI may use) must stay visible: the private /tmp
    tmpfs is mounted first and the runtime bound on top of it."""
    runtime = Path("/tmp/checkout/.venv")
    monkeypatch.setattr(_bwrap, "runtime_paths", lambda: [runtime])
    argv = _bwrap.bwrap_argv(
        "/usr/bin/bwrap", CellSpec(name="c", argv=["python3"]), n_pass_fds=0,
        file_secrets=(), tmpfs_bytes=1 << 20,
    )
    tmpfs = argv.index("--tmpfs")
    assert argv[tmpfs + 1] == "/tmp"
    bind = next(i for i in range(len(argv) - 2)
                if argv[i] == "--ro-bind" and argv[i + 2] == str(runtime))
    assert tmpfs < bind


def test_peers_dir_is_bound_read_only_at_run_cell_peers() -> None:
    """A replica sees its group's peer sockets (a live directory) and nothing is writable."""
    spec = CellSpec(name="c", argv=["python3"], peers_dir="/srv/run/.replicas/c")
    argv = _bwrap.bwrap_argv(
        "/usr/bin/bwrap", spec, n_pass_fds=0, file_secrets=(), tmpfs_bytes=1 << 20,
    )
    i = argv.index(_bwrap.PEERS_DIR_INSIDE)
    assert argv[i - 2 : i] == ["--ro-bind", "/srv/run/.replicas/c"]
    plain = _bwrap.bwrap_argv(
        "/usr/bin/bwrap", CellSpec(name="c", argv=["python3"]), n_pass_fds=0,
        file_secrets=(), tmpfs_bytes=1 << 20,
    )
    assert _bwrap.PEERS_DIR_INSIDE not in plain

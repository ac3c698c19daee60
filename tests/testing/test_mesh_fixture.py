"""``open_mesh`` / ``open_root`` as a test fixture (docs/testing.md): what comes out of the
block. A block's own error is raised as it is (not inside an exception group), and a
mesh that stops on its own mid-block raises ``MeshStopped`` -- a test can never pass
without running the rest of its block."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import trio

import cellmesh
from cellmesh.actors.control import StopMesh
from cellmesh.actors.errors import CellsCannotStart
from cellmesh.errors import RemoteCellError
from cellmesh.testing import MeshStopped, open_mesh, open_root

CELL = '''\
import cellmesh


@cellmesh.protein("t.fixture.Boom")
class Boom:
    pass


class Bomb(cellmesh.Cell):
    @cellmesh.receptor
    async def boom(self, msg: Boom) -> None:
        raise ValueError("kaboom")
'''


@cellmesh.protein("t.fixture.Boom")
class Boom:
    pass


def _home() -> Path:
    home = Path(tempfile.mkdtemp(prefix="cf-", dir="/tmp"))
    (home / "bomb.py").write_text(CELL)
    return home


TOML = '[cells.bomb]\ndna = "bomb.py"\nentry = "bomb:Bomb"\n'


async def test_a_blocks_own_errors_come_out_as_they_are() -> None:
    home = _home()
    try:
        (home / "cellmesh.toml").write_text(TOML)
        with pytest.raises(RemoteCellError, match="kaboom"):
            async with open_mesh(home / "cellmesh.toml") as root:
                async with cellmesh.Synapse.grow(
                    "bomb", socket_dir=root.paths.socket_dir
                ) as syn:
                    await syn.fire(Boom())
        with pytest.raises(KeyError, match="the test's own"):
            async with open_root(home, TOML):
                raise KeyError("the test's own")
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def test_a_mesh_stopping_mid_block_raises_mesh_stopped() -> None:
    home = _home()
    ran_on = []
    try:
        with pytest.raises(MeshStopped, match="the rest of the block did not run"):
            async with open_root(home, TOML) as root:
                async with cellmesh.Synapse.grow(
                    "mitosis", socket_path=root.paths.umbilical
                ) as ctl:
                    await ctl.fire(StopMesh(timeout=5.0))
                with trio.fail_after(30):
                    await trio.sleep_forever()
                ran_on.append("never")
        assert ran_on == []
        # a block that ends first is no stop of the mesh's own
        async with open_root(home, TOML) as root:
            assert root.status().cells
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def test_a_failed_start_says_where_the_logs_went() -> None:
    """The root's message names `cellmesh logs X`, but open_mesh's home is gone by then:
    a note on the error says so, and how to see the root's log lines instead."""
    home = _home()
    try:
        (home / "cellmesh.toml").write_text(TOML.replace("bomb:Bomb", "bomb:Nope"))
        with pytest.raises(CellsCannotStart) as info:  # not in a group (docs/testing.md)
            async with open_mesh(home / "cellmesh.toml"):
                pass
        notes = "\n".join(getattr(info.value, "__notes__", []))
        assert "open_mesh removed its private home" in notes and "log=print" in notes
    finally:
        shutil.rmtree(home, ignore_errors=True)

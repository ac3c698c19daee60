"""The launcher's standby hand-over, against the stub backend (no processes needed)."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import attrs
import trio
import trio.testing

from cellmesh.actors._cells import CellSlot
from cellmesh.actors._launch import Launcher
from cellmesh.actors._tasks import Background
from cellmesh.actors.dna import DnaCache
from cellmesh.actors.manifest import CellDecl, RootDecl
from cellmesh.config import Paths
from cellmesh.sandbox import CellSpec, ExitStatus, SpawnedCell, StubBackend


@attrs.define(eq=False)
class CountingStub(StubBackend):
    """A stub whose waits are recorded (a pidfd allows one waiter at a time)."""

    waited: list[str] = attrs.Factory(list)
    held: list[int] = attrs.Factory(list)

    def spawn(self, cell_id: str, **kw: Any) -> SpawnedCell:
        # Hold the passed fds as a real process would (the go pipe stays open).
        self.held += [os.dup(fd) for fd in kw.get("pass_fds", ())]
        return super().spawn(cell_id, **kw)

    async def wait_async(self, cell_id: str) -> ExitStatus:
        self.waited.append(cell_id)
        await trio.sleep_forever()
        raise AssertionError("unreachable")


async def test_a_standby_handed_over_before_its_watcher_ran_is_not_waited_on_twice() -> None:
    with tempfile.TemporaryDirectory(prefix="cml-", dir="/tmp") as d:
        home = Path(d)
        paths = Paths.from_env({"CELL_HOME": str(home)})
        backend = CountingStub()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(home / "c.sock"))
        listener.listen()
        slot = CellSlot(
            name="c", supervisor="root", listener=listener, socket_path=home / "c.sock",
            umbilical_path=home / "u.sock", decl=CellDecl(name="c", dna=home / "c.py"),
        )
        for cell_id in slot.cell_ids:
            backend.create(CellSpec(name="c", cell_id=cell_id, argv=["cell"]))
        slot.created = True
        async with trio.open_nursery() as nursery:
            launcher = Launcher(
                backend=backend, dna=DnaCache.from_paths(paths), paths=paths, root=RootDecl(),
                tasks=Background(nursery, lambda _: None), socket_of=lambda _: None,
            )
            launcher.ensure_standby(slot, busy=None)
            standby = slot.standby
            assert standby is not None
            cell_id = launcher.launch(slot).cell_id  # before the standby's watcher first runs
            assert cell_id == standby.cell_id and slot.standby is None
            await trio.testing.wait_all_tasks_blocked()
            assert backend.waited == []  # the instance alone will wait on that process
            nursery.cancel_scope.cancel()
        listener.close()
        for fd in backend.held:
            os.close(fd)

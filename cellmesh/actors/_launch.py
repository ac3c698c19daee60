"""Launching a cell's processes: the sandboxed cell, its log pipe, and its standby.

Theory of operation
-------------------
:meth:`Launcher.prepare` builds a slot's DNA entry and creates its sandboxed
cell on the backend -- twice when the cell keeps a standby: the running
process and the one that will replace it alternate between two backend ids
(``name`` and ``name..b``), so neither is ever torn down and re-created, and
the listening socket they share is never unlinked while either exists.

Every process gets the listening socket as fd 3, a "go" pipe as fd 4
(``CELL_GO_FD``) and a pipe for its stdout and stderr, pumped into the
cell's rotating log. The runtime imports everything it needs, then blocks
on the go pipe (:func:`cellmesh.actors.runtime.wait_for_go`).

* :meth:`Launcher.launch` starts serving: it hands over the standby if one
  is ready (one byte on its go pipe: the cost of a start becomes a pipe
  write, not an interpreter start and the imports), else spawns a fresh
  process and tells it to go at once.
* :meth:`Launcher.ensure_standby` spawns the next standby on the free id.
  The root calls it once a process is ready (so the standby's start-up
  never competes with the start it would speed up) and when a dormant
  cell is prepared. A standby that dies while it waits is forgotten; the
  next ready process brings another.
* :meth:`Launcher.retire` closes every standby's go pipe: they exit.

Replicas (slots with a :class:`~cellmesh.actors._cells.ReplicaPart`): the
group's client listener is fd 3 and the replica's own peer listener fd 4, so
the go pipe is fd 5; the sandbox is named for the group (``CELL_NAME``) but
files its events under the replica's stem, binds the replica's data
directory and the group's peer directory. The ``CELL_REPLICA_*`` env is
recomputed (``replica_env``) before every spawn and every hand-over: when it
changed, the backend id is created again with it, and a standby made with
the older env is not used (it is told to exit).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

import attrs
import trio

from ..config import Paths
from ..errors import ConfigError
from ..sandbox import FIRST_PASSED_FD, CellBackend, CellSpec, NetGrant, WorkloadEnv
from ._cells import CellSlot, Standby
from ._tasks import Background
from .dna import DnaCache
from .logs import RotatingLog, pump_output
from .manifest import RootDecl

#: The runtime every cell process runs.
RUNTIME_MODULE: Final = "cellmesh.actors.runtime"
#: Where a cell's umbilical appears inside a bwrap sandbox.
UMBILICAL_INSIDE: Final = "/run/cell/mitosis.sock"
#: The go pipe is the second passed fd (the listener is the first).
GO_FD: Final = FIRST_PASSED_FD + 1
#: A replica's go pipe: after the client listener (3) and its peer listener (4).
REPLICA_GO_FD: Final = FIRST_PASSED_FD + 2
#: The file that marks ``$CELL_HOME/data/X/`` as a replicated cell's (the group record).
GROUP_RECORD: Final = "group.json"


@attrs.define(eq=False)
class Launcher:
    """Creates and spawns the processes of the root's cells (see the module doc)."""

    backend: CellBackend
    dna: DnaCache
    paths: Paths
    root: RootDecl
    #: Starts the standby watchers and log pumps (contained: none can stop the root).
    tasks: Background
    #: The socket of a cell a slot may call (None: not a cell of this root).
    socket_of: Callable[[str], Path | None]
    #: The ``CELL_REPLICA_*`` env of a replica's next process (replicated cells only).
    replica_env: Callable[[CellSlot], Mapping[str, str]] | None = None

    def children_dir(self, parent: str) -> Path:
        """Where the sockets of ``parent``'s dynamic children are linked (bound into it)."""
        return self.paths.socket_dir / ".children" / parent

    async def prepare(self, slot: CellSlot) -> None:
        """Build the DNA entry and create the sandboxed cell(s), once per slot."""
        if slot.created:
            return
        if slot.replica is None and slot.decl.data:
            record = self.paths.data_dir / slot.name / GROUP_RECORD
            if record.exists():
                raise ConfigError(
                    str(record.parent), f"holds a replicated cell's data ({GROUP_RECORD}); "
                    f"{slot.name} is not replicated now: give it replicas again, or move "
                    "the directory away",
                )
        entry = await trio.to_thread.run_sync(self.dna.ensure, slot.decl.dna)
        slot.dna_digest = entry.digest
        slot.entry_name = entry.name
        slot.entry_root = entry.root
        version = self._env_version(slot)
        created: list[str] = []
        try:
            for cell_id in slot.cell_ids:
                self.backend.create(self._spec(slot, cell_id))
                slot.spec_versions[cell_id] = version
                created.append(cell_id)
        except BaseException:
            for cell_id in created:
                with contextlib.suppress(Exception):
                    self.backend.destroy(cell_id, grace=0.0)
            raise
        slot.created = True

    def _spec(self, slot: CellSlot, cell_id: str) -> CellSpec:
        """The sandbox spec of ``slot``'s backend id ``cell_id`` (after :meth:`prepare`'s DNA)."""
        decl = slot.decl
        replica = slot.replica
        bwrap = self.backend.name == "bwrap"
        env = dict(decl.env)
        env["CELL_ENTRY"] = decl.entry or slot.entry_name
        env["CELL_UMBILICAL"] = UMBILICAL_INSIDE if bwrap else str(slot.umbilical_path)
        env["CELL_GO_FD"] = str(GO_FD if replica is None else REPLICA_GO_FD)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        if replica is not None:
            env.update(replica.env)
        granted = [slot.umbilical_path]
        for callee in decl.calls:
            target = self.socket_of(callee)
            if target is not None:
                granted.append(target)
        children_dir = self.children_dir(slot.name) if decl.max_children > 0 else None
        if children_dir is not None:
            # 0711: a cell running as another uid may reach the sockets in it
            # (by name, not list them); the 0700 socket dir above keeps every
            # other host user out.
            children_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(children_dir, 0o711)
        if replica is not None:
            data_dir: Path | None = replica.data_dir
        else:
            data_dir = self.paths.data_dir / slot.name if decl.data else None
        network = decl.network
        assert slot.entry_root is not None
        return CellSpec(
            name=decl.name if replica is not None else slot.name,
            cell_id=cell_id,
            log_name=slot.stem,
            argv=(sys.executable, "-m", RUNTIME_MODULE),
            env=WorkloadEnv(items=env),
            limits=decl.limits,
            secrets=decl.secrets,  # type: ignore[arg-type]  # attrs converter=tuple
            dna_dir=slot.entry_root,
            data_dir=data_dir,
            own_socket=slot.socket_path,
            granted_sockets=granted,
            children_dir=children_dir,
            peers_dir=None if replica is None else replica.peers_dir,
            allow_net=network == "host",
            net_grants=() if isinstance(network, str) else tuple(
                NetGrant(host=g.host, port=g.port) for g in network
            ),
        )

    def _env_version(self, slot: CellSlot) -> int:
        """Recompute a replica's env for its next process; its version (0 for a plain cell)."""
        replica = slot.replica
        if replica is None:
            return 0
        if self.replica_env is not None:
            return replica.set_env(self.replica_env(slot))
        return replica.env_version

    def _refresh(self, slot: CellSlot, cell_id: str, version: int) -> None:
        """Create ``cell_id`` again if it was made for an older replica env (it is not running)."""
        if slot.spec_versions.get(cell_id, version) == version:
            return
        self.backend.destroy(cell_id, grace=0.0)
        slot.spec_versions.pop(cell_id, None)
        self.backend.create(self._spec(slot, cell_id))
        slot.spec_versions[cell_id] = version

    async def destroy(self, slot: CellSlot) -> None:
        """Stop the slot's processes and remove every trace of its sandboxed cells."""
        self.retire(slot)
        if not slot.created:
            return
        slot.created = False
        for cell_id in slot.cell_ids:
            with contextlib.suppress(Exception):
                await self.backend.destroy_async(cell_id, grace=1.0)

    # ------------------------------------------------------------ processes

    def launch(self, slot: CellSlot) -> tuple[str, int]:
        """Make a process of ``slot`` serve: the standby if ready, else a fresh one."""
        version = self._env_version(slot)
        if slot.standby is not None and slot.standby.version != version:
            self.retire(slot)  # made with an older replica env
        standby = slot.standby
        if standby is not None:
            slot.standby = None
            standby.scope.cancel()  # from now on the instance waits on this process
            try:
                if self.backend.process_id(standby.cell_id) is not None:
                    os.write(standby.go, b"g")
                    return standby.cell_id, standby.pid
            except OSError:
                pass  # it died just now: start a fresh one
            finally:
                os.close(standby.go)
        cell_id = self._free_id(slot)
        pid, go = self._spawn(slot, cell_id, version)
        try:
            os.write(go, b"g")
        finally:
            os.close(go)
        return cell_id, pid

    def ensure_standby(self, slot: CellSlot, *, busy: str | None) -> None:
        """Spawn a standby for ``slot`` unless it has one (``busy``: the running id)."""
        if not slot.decl.standby or slot.standby is not None or not slot.created:
            return
        free = [
            i for i in slot.cell_ids if i != busy and self.backend.process_id(i) is None
        ]
        if not free:
            return
        version = self._env_version(slot)
        pid, go = self._spawn(slot, free[0], version)
        standby = Standby(
            cell_id=free[0], pid=pid, go=go, scope=trio.CancelScope(), version=version
        )
        slot.standby = standby
        self.tasks.start_soon(self._watch_standby, slot, standby, name=f"standby of {slot.name}")

    def retire(self, slot: CellSlot) -> None:
        """Tell the slot's standby it will not be needed (it exits)."""
        standby, slot.standby = slot.standby, None
        if standby is not None:
            standby.scope.cancel()
            with contextlib.suppress(OSError):
                os.close(standby.go)

    async def _watch_standby(self, slot: CellSlot, standby: Standby) -> None:
        if slot.standby is not standby:
            # Handed over (or retired) before this task first ran: its process
            # is the instance's to wait on now -- one waiter per pidfd.
            return
        with standby.scope:
            await self.backend.wait_async(standby.cell_id)
            if slot.standby is standby:  # it died while waiting: forget it
                slot.standby = None
                with contextlib.suppress(OSError):
                    os.close(standby.go)

    def _free_id(self, slot: CellSlot) -> str:
        for cell_id in slot.cell_ids:
            if self.backend.process_id(cell_id) is None:
                return cell_id
        return slot.cell_ids[0]  # spawn reports the one that still runs

    def _spawn(self, slot: CellSlot, cell_id: str, version: int) -> tuple[int, int]:
        """Spawn on ``cell_id``: listener as fd 3, go pipe as fd 4, output piped to the log.

        A replica gets its peer listener as fd 4 and the go pipe as fd 5; its
        backend id is first made again if its env changed (``version``).
        Runs in the Trio thread: the sandbox's parent-death signal is tied to
        the spawning thread. Returns the pid and the go pipe's write end.
        """
        self._refresh(slot, cell_id, version)
        listeners = [slot.listener.fileno()]
        if slot.replica is not None:
            listeners.append(slot.replica.peer_listener.fileno())
        go_read, go_write = os.pipe2(os.O_CLOEXEC)
        out_read, out_write = os.pipe2(os.O_CLOEXEC)
        try:
            spawned = self.backend.spawn(
                cell_id, pass_fds=[*listeners, go_read], stdout=out_write, stderr=out_write,
            )
        except BaseException:
            os.close(go_write)
            os.close(out_read)
            raise
        finally:
            os.close(go_read)
            os.close(out_write)
        self.tasks.start_soon(self._pump, slot, out_read, name=f"log pump of {slot.name}")
        return spawned.pid, go_write

    async def _pump(self, slot: CellSlot, fd: int) -> None:
        if slot.log is None:
            slot.log = RotatingLog(
                self.paths.log_dir, slot.stem,
                max_bytes=self.root.log_max_bytes, keep=self.root.log_keep,
            )
        on_line = None if slot.replica is None else slot.replica.note_line
        try:
            await pump_output(fd, slot.log, on_line=on_line)
        finally:
            os.close(fd)


__all__ = ["GO_FD", "REPLICA_GO_FD", "RUNTIME_MODULE", "UMBILICAL_INSIDE", "Launcher"]

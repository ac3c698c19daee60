"""Launching a cell's processes: the sandboxed cell, its log pipe, and its standby.

Theory of operation
-------------------
:meth:`Launcher.prepare` builds a slot's DNA entry and creates its sandboxed
cell on the backend twice: the running process and the one that will
replace it (its standby, or the new version during a hot swap) alternate
between two backend ids (``name`` and ``name..b``), so neither is torn down
and re-created on a restart, and the listening socket they share is never
unlinked while either exists. A hot swap re-makes one id at a time for other
code (:meth:`Launcher.provision`) while the other keeps serving.

Every process gets the listening socket as fd 3, a "go" pipe as fd 4
(``CELL_GO_FD``), a report pipe as fd 5 (``CELL_REPORT_FD``: the runtime
says on it when its code is imported and why it failed, :mod:`.exitcause`;
the slot keeps the read end of the last process spawned on each backend
id) and a pipe for its stdout and stderr, pumped into the cell's rotating
log (the last lines of each process are kept, for a swap's failure
report). Every kind of process -- a first start, a standby, the new
version of a hot swap, a template's check process -- is spawned by
:meth:`Launcher._spawn`, so each gets all three fds and the same
environment. The runtime imports everything it needs, then reads the go
pipe (:mod:`cellmesh.actors._standby`): ``i DIGEST`` (preload that code:
the standby reports ``loaded`` or why the import failed), then ``g TOKEN``
(serve) or ``s TOKEN DIGEST`` (take over in a hot swap, with that code);
the token, fresh and random, names the process to the root from then on.

The sandbox binds the cell's DNA directory, ``$CELL_SOCKET_DIR/.dna/<cell>/``,
holding one entry per version of the code that may run (hard links to the
cache entry, :meth:`Launcher.link`): a process picks its version by digest,
so a standby can take over with new code without a new sandbox.

* :meth:`Launcher.launch` starts serving: it hands over the standby if one
  is ready (one byte on its go pipe: the cost of a start becomes a pipe
  write, not an interpreter start and the imports), else spawns a fresh
  process and tells it to go at once.
* :meth:`Launcher.ensure_standby` spawns the next standby on the free id.
  The root calls it once a process is ready (so the standby's start-up
  never competes with the start it would speed up) and when a dormant
  cell is prepared. A standby that dies while it waits is forgotten; the
  next ready process brings another.
* :meth:`Launcher.preload` spawns a standby even for a cell that keeps
  none (``standby = false``): ``cellmesh up`` waits for every cell's
  standby to report that its code imported before it starts the mesh.
* :meth:`Launcher.retire` closes every standby's go pipe: they exit.

Replicas (slots with a :class:`~cellmesh.actors._cells.ReplicaPart`): the
group's client listener is fd 3 and the replica's own peer listener fd 4, so
the go pipe is fd 5 and the report pipe fd 6; the sandbox is named for the
group (``CELL_NAME``) but files its events, logs and DNA directory under the
replica's stem ``X..<id>``, binds the replica's data directory and the
group's peer directory. The ``CELL_REPLICA_*`` env is recomputed
(``replica_env``) before every spawn and every hand-over: when it changed,
the backend id is created again with it, and a standby made with the older
env is not used (it is told to exit).
"""

from __future__ import annotations

import collections
import contextlib
import os
import secrets
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

import attrs
import trio

from ..config import Paths
from ..errors import CellmeshError, ConfigError
from ..sandbox import FIRST_PASSED_FD, CellBackend, CellSpec, NetGrant, WorkloadEnv
from ._cells import CellSlot, Launched, Standby, template_of
from ._dnaprune import DnaPruner
from ._reports import ReportPipe
from ._tasks import Background
from .dna import DnaCache, DnaEntry, DnaHold, force_rmtree
from .exitcause import REPORT_FD_ENV
from .logs import RotatingLog, pump_output
from .manifest import CellDecl, RootDecl

#: The runtime every cell process runs.
RUNTIME_MODULE: Final = "cellmesh.actors.runtime"
#: Where a cell's umbilical appears inside a bwrap sandbox.
UMBILICAL_INSIDE: Final = "/run/cell/mitosis.sock"
#: The go pipe is the second passed fd (the listener is the first).
GO_FD: Final = FIRST_PASSED_FD + 1
#: The report pipe is the third.
REPORT_FD: Final = FIRST_PASSED_FD + 2
#: A replica's go and report pipes: after the client listener (3) and its peer listener (4).
REPLICA_GO_FD: Final = FIRST_PASSED_FD + 2
REPLICA_REPORT_FD: Final = FIRST_PASSED_FD + 3
#: The file that marks ``$CELL_HOME/data/X/`` as a replicated cell's (the group record).
GROUP_RECORD: Final = "group.json"
#: Bytes of a process's go token (twice as many hex digits).
TOKEN_BYTES: Final = 16
#: Lines of each process's output kept for a failure report.
TAIL_LINES: Final = 20
#: The longest line kept (bytes, before decoding).
TAIL_LINE_BYTES: Final = 1000


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
    #: For a template's name in ``calls``: its running instances, ``(name, socket)``;
    #: None for any other name.
    instances_of: Callable[[str], list[tuple[str, Path]] | None] = lambda _: None
    #: The root's slots (the live mapping): the DNA they reference is never pruned.
    slots: Mapping[str, CellSlot] = attrs.Factory(dict)
    #: Removes the DNA cache entries no slot needs (:mod:`._dnaprune`).
    pruner: DnaPruner = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.pruner = DnaPruner(
            cache=self.dna, slots=self.slots, log=self.tasks.log, keep=self.root.dna_cache_keep
        )

    def children_dir(self, parent: str) -> Path:
        """Where the sockets a cell reaches by name beyond its ``calls`` are linked (bound
        into it at ``/run/cell/children``): its dynamic children's, and the running
        instances of the templates its ``calls`` lists."""
        return self.paths.socket_dir / ".children" / parent

    def grant(self, caller: str, name: str, socket: Path) -> None:
        """Let ``caller`` reach cell ``name``: a hard link to its socket in ``caller``'s
        :meth:`children_dir` (a running sandbox sees it at once)."""
        link = self.children_dir(caller) / f"{name}.sock"
        link.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        os.link(socket, link)

    def share(self, slot: CellSlot, cells: list[CellSlot], *, on: bool) -> None:
        """Grant (``on``) or revoke dynamic child ``slot`` to every one of ``cells`` whose
        ``calls`` list its template (plain cells: a replica reaches no instance)."""
        template = template_of(slot)
        for caller in cells if template is not None else ():
            if template in caller.decl.calls and caller.replica is None and caller is not slot:
                if on:
                    self.grant(caller.name, slot.name, slot.socket_path)
                else:
                    self.revoke(caller.name, slot.name)

    def revoke(self, caller: str, name: str) -> None:
        """Undo :meth:`grant` (nothing if there is no such link)."""
        with contextlib.suppress(OSError):
            os.unlink(self.children_dir(caller) / f"{name}.sock")

    def dna_root(self, name: str) -> Path:
        """The cell's DNA directory: one entry per version that may run (bound into it)."""
        return self.paths.socket_dir / ".dna" / name

    async def link(self, slot: CellSlot, entry: DnaEntry) -> None:
        """Make ``entry``'s code visible to the cell's sandboxes (idempotent)."""
        target = self.dna_root(slot.stem) / entry.digest
        await trio.to_thread.run_sync(_link_tree, entry.root, target)

    async def prune(self, slot: CellSlot, keep: set[str]) -> None:
        """Remove the versions of the cell's DNA directory not in ``keep`` (digests)."""
        root = self.dna_root(slot.stem)

        def prune() -> None:
            for path in root.iterdir() if root.is_dir() else ():
                if path.name not in keep:
                    force_rmtree(path)

        await trio.to_thread.run_sync(prune)

    async def build(self, decl: CellDecl, hold: DnaHold) -> DnaEntry:
        """Build (or reuse) the DNA entry of ``decl``'s code (in a thread).

        Its digest is pinned in ``hold`` before the entry is looked for: keep
        the hold until the entry is referenced by a slot (the cache's
        pruning skips held digests, :mod:`._dnaprune`).
        """
        return await trio.to_thread.run_sync(self.dna.ensure, decl.dna, hold)

    async def prepare(self, slot: CellSlot) -> None:
        """Build the DNA entry and create the sandboxed cells, once per slot."""
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
        with self.dna.hold() as hold:  # until the slot references it
            if slot.replica is not None and slot.dna is not None:
                entry = slot.dna  # a replica added to a group runs the group's code
            else:
                entry = await self.build(slot.decl, hold)
            await self.link(slot, entry)
            slot.dna = entry
            slot.dna_digest = entry.digest
        self.pruner.prepared(slot)
        version = self._env_version(slot)
        spec = self._spec(slot, slot.decl, entry)
        created: list[str] = []
        try:
            for cell_id in slot.cell_ids:
                self.backend.create(attrs.evolve(spec, cell_id=cell_id))
                slot.spec_versions[cell_id] = version
                created.append(cell_id)
        except BaseException:
            for cell_id in created:
                with contextlib.suppress(Exception):
                    self.backend.destroy(cell_id, grace=0.0)
            raise
        slot.created = True

    async def provision(
        self, slot: CellSlot, cell_id: str, decl: CellDecl, entry: DnaEntry
    ) -> None:
        """Re-make backend id ``cell_id`` of ``slot`` for ``entry``'s code under ``decl``.

        Its process, if any, is stopped by the teardown (a retired standby
        exits on its own). The other id keeps serving meanwhile (it holds
        the shared listening socket, so the teardown leaves that in place).
        """
        if cell_id in self.backend.tracked():
            await self.backend.destroy_async(cell_id, grace=1.0)
        self.backend.create(attrs.evolve(self._spec(slot, decl, entry), cell_id=cell_id))

    def _spec(self, slot: CellSlot, decl: CellDecl, entry: DnaEntry) -> CellSpec:
        """The sandbox of ``slot`` as ``decl`` says (``entry`` names its module).

        The sandbox binds the cell's DNA directory, not one entry: any version
        linked there can run in it.
        """
        bwrap = self.backend.name == "bwrap"
        replica = slot.replica
        env = dict(decl.env)
        env["CELL_ENTRY"] = decl.entry or entry.name
        env["CELL_UMBILICAL"] = UMBILICAL_INSIDE if bwrap else str(slot.umbilical_path)
        env["CELL_GO_FD"] = str(GO_FD if replica is None else REPLICA_GO_FD)
        env[REPORT_FD_ENV] = str(REPORT_FD if replica is None else REPLICA_REPORT_FD)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        if replica is not None:
            env.update(replica.env)
        granted = [slot.umbilical_path]
        instances: list[tuple[str, Path]] = []
        templates = False
        for callee in decl.calls:
            target = self.socket_of(callee)
            if target is not None:
                granted.append(target)
            running = self.instances_of(callee) if replica is None else None
            if running is not None:  # a template: its instances, as they come and go
                templates = True
                instances += running
        wants_dir = decl.max_children > 0 or templates
        children_dir = self.children_dir(slot.name) if wants_dir else None
        for name, socket in instances:
            with contextlib.suppress(OSError):
                self.grant(slot.name, name, socket)
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
        if not isinstance(network, str) and not getattr(self.backend, "enforces_net_grants", True):
            raise ConfigError(
                f"{slot.key}.network" if slot.key else "network",
                f"lists destinations, which only the bwrap sandbox can hold a cell to; this "
                f"root runs the {self.backend.name} sandbox (CELL_SANDBOX or [root] sandbox): "
                'use bwrap, or network = "host" for the whole network',
            )
        return CellSpec(
            name=decl.name if replica is not None else slot.name,
            log_name=slot.stem,
            argv=(sys.executable, "-m", RUNTIME_MODULE),
            env=WorkloadEnv(items=env),
            limits=decl.limits,
            secrets=decl.secrets,  # type: ignore[arg-type]  # attrs converter=tuple
            dna_dir=self.dna_root(slot.stem),
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
        assert slot.dna is not None
        self.backend.destroy(cell_id, grace=0.0)
        slot.spec_versions.pop(cell_id, None)
        spec = self._spec(slot, slot.decl, slot.dna)
        self.backend.create(attrs.evolve(spec, cell_id=cell_id))
        slot.spec_versions[cell_id] = version

    async def destroy(self, slot: CellSlot) -> None:
        """Stop the slot's processes and remove every trace of its sandboxed cells."""
        self.retire(slot)
        if slot.created:
            slot.created = False
            for cell_id in slot.cell_ids:
                with contextlib.suppress(Exception):
                    await self.backend.destroy_async(cell_id, grace=1.0)
            with contextlib.suppress(OSError):
                await trio.to_thread.run_sync(force_rmtree, self.dna_root(slot.stem))
            self.pruner.request()  # its code may be unused now
        for pipe in slot.reports.values():
            pipe.close()
        slot.reports.clear()

    # ------------------------------------------------------------ processes

    def launch(self, slot: CellSlot) -> Launched:
        """Make a process of ``slot`` serve: the standby if ready, else a fresh one."""
        token = secrets.token_hex(TOKEN_BYTES)
        if slot.standby is not None and slot.standby.version != self._env_version(slot):
            self.retire(slot)  # made with an older replica env
        standby = slot.standby
        if standby is not None:
            slot.standby = None
            standby.scope.cancel()  # from now on the instance waits on this process
            try:
                if self.backend.process_id(standby.cell_id) is not None:
                    os.write(standby.go, f"g {token}\n".encode())
                    return Launched(
                        cell_id=standby.cell_id, pid=standby.pid, token=token, tail=standby.tail
                    )
            except OSError:
                pass  # it died just now: start a fresh one
            finally:
                os.close(standby.go)
        cell_id = self._free_id(slot)
        return self._go(slot, cell_id, f"{_preload(slot)}g {token}\n", token)

    def spawn_successor(self, slot: CellSlot, cell_id: str, entry: DnaEntry) -> Launched:
        """Start a fresh process on ``cell_id`` that takes over with ``entry``'s code (a swap)."""
        token = secrets.token_hex(TOKEN_BYTES)
        return self._go(slot, cell_id, f"i {entry.digest}\ns {token} {entry.digest}\n", token)

    def take_standby(self, slot: CellSlot, entry: DnaEntry) -> Launched | None:
        """The standby takes over with ``entry``'s code (a swap); None if it is gone.

        ``entry`` must be linked into the cell's DNA directory.
        """
        standby, slot.standby = slot.standby, None
        if standby is None:
            return None
        standby.scope.cancel()  # from now on the swap waits on this process
        token = secrets.token_hex(TOKEN_BYTES)
        try:
            if self.backend.process_id(standby.cell_id) is None:
                return None
            os.write(standby.go, f"s {token} {entry.digest}\n".encode())
        except OSError:
            return None
        finally:
            os.close(standby.go)
        return Launched(cell_id=standby.cell_id, pid=standby.pid, token=token, tail=standby.tail)

    def preload(self, slot: CellSlot) -> ReportPipe | None:
        """A standby for ``slot`` whatever its ``standby`` key; its report pipe.

        None when the slot is not created, a swap of it runs or both its ids
        are busy. Raises :class:`~cellmesh.errors.CellmeshError` when the
        sandbox cannot spawn it (``cellmesh up`` reports that as a problem).
        """
        spawned = self._spawn_standby(slot, busy=None, always=True)
        if spawned is None and slot.standby is not None:
            spawned = slot.standby.cell_id  # it had one already
        return None if spawned is None else slot.reports.get(spawned)

    def ensure_standby(self, slot: CellSlot, *, busy: str | None) -> None:
        """Spawn a standby for ``slot`` unless it has one (``busy``: the running id).

        Only for a cell that keeps one (``standby = true``); it preloads the
        code in force; never during a hot swap of the slot. A standby is a
        speed-up: one the sandbox cannot spawn is logged and left out, and
        whatever asked for it (a ready process, a finished swap) goes on.
        """
        try:
            self._spawn_standby(slot, busy=busy, always=False)
        except CellmeshError as exc:
            self.tasks.log(f"root: no standby for {slot.name}: {exc}")

    def _spawn_standby(self, slot: CellSlot, *, busy: str | None, always: bool) -> str | None:
        """Spawn the standby (see :meth:`ensure_standby`); the id it was spawned on, if any."""
        if (
            not (slot.decl.standby or always) or slot.standby is not None or not slot.created
            or slot.swap_phase
        ):
            return None
        free = [i for i in slot.cell_ids if i != busy and self._idle(i)]
        if not free:
            return None
        pid, go, tail = self._spawn(slot, free[0])
        try:
            os.write(go, _preload(slot).encode())
        except OSError:
            os.close(go)
            return free[0]  # it died at once: its report pipe may say why
        standby = Standby(
            cell_id=free[0], pid=pid, go=go, scope=trio.CancelScope(), tail=tail,
            version=slot.spec_versions.get(free[0], 0),
        )
        slot.standby = standby
        self.tasks.start_soon(self._watch_standby, slot, standby, name=f"standby of {slot.name}")
        return free[0]

    def _go(self, slot: CellSlot, cell_id: str, commands: str, token: str) -> Launched:
        """Spawn on ``cell_id`` and write ``commands`` on its go pipe at once."""
        pid, go, tail = self._spawn(slot, cell_id)
        try:
            os.write(go, commands.encode())
        finally:
            os.close(go)
        return Launched(cell_id=cell_id, pid=pid, token=token, tail=tail)

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

    def _idle(self, cell_id: str) -> bool:
        """The backend id exists and runs no process."""
        return cell_id in self.backend.tracked() and self.backend.process_id(cell_id) is None

    def _free_id(self, slot: CellSlot) -> str:
        for cell_id in slot.cell_ids:
            if self._idle(cell_id):
                return cell_id
        return slot.cell_ids[0]  # spawn reports the one that still runs

    def _spawn(self, slot: CellSlot, cell_id: str) -> tuple[int, int, collections.deque[str]]:
        """Spawn on ``cell_id``: listener as fd 3, go pipe as fd 4, report pipe as fd 5,
        output piped to the log.

        A replica gets its peer listener as fd 4 (the go and report pipes move
        to 5 and 6); its backend id is first made again if its env changed.
        Runs in the Trio thread: the sandbox's parent-death signal is tied to
        the spawning thread. Returns the pid, the go pipe's write end and
        the deque its last output lines are kept in; the report pipe's read
        end replaces the previous process's in ``slot.reports[cell_id]``.
        """
        self._refresh(slot, cell_id, self._env_version(slot))
        listeners = [slot.listener.fileno()]
        if slot.replica is not None:
            listeners.append(slot.replica.peer_listener.fileno())
        go_read, go_write = os.pipe2(os.O_CLOEXEC)
        out_read, out_write = os.pipe2(os.O_CLOEXEC)
        report_read, report_write = os.pipe2(os.O_CLOEXEC)
        try:
            spawned = self.backend.spawn(
                cell_id, pass_fds=[*listeners, go_read, report_write],
                stdout=out_write, stderr=out_write,
            )
        except BaseException:
            os.close(go_write)
            os.close(out_read)
            os.close(report_read)
            raise
        finally:
            os.close(go_read)
            os.close(out_write)
            os.close(report_write)
        old = slot.reports.pop(cell_id, None)
        if old is not None:
            old.close()
        slot.reports[cell_id] = ReportPipe(report_read)
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.tasks.start_soon(self._pump, slot, out_read, tail, name=f"log pump of {slot.name}")
        return spawned.pid, go_write, tail

    async def _pump(self, slot: CellSlot, fd: int, tail: collections.deque[str]) -> None:
        if slot.log is None:
            slot.log = RotatingLog(
                self.paths.log_dir, slot.stem,
                max_bytes=self.root.log_max_bytes, keep=self.root.log_keep,
            )
        replica = slot.replica

        def on_line(line: bytes) -> None:
            tail.append(line[:TAIL_LINE_BYTES].decode("utf-8", "replace"))
            if replica is not None:
                replica.note_line(line)

        try:
            await pump_output(fd, slot.log, on_line=on_line)
        finally:
            os.close(fd)


def _preload(slot: CellSlot) -> str:
    """The go pipe's command to preload the code in force (none before the first build)."""
    return f"i {slot.dna.digest}\n" if slot.dna is not None else ""


def _link_tree(source: Path, target: Path) -> None:
    """Hard-link the read-only tree ``source`` at ``target`` (copy across file systems).

    Built beside ``target`` and renamed into place, so a process never sees a
    half-made entry; an existing ``target`` is kept (same digest, same bytes).
    """
    if target.exists():
        return
    target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chmod(target.parent, 0o755)
    os.chmod(target.parent.parent, 0o711)
    tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}"

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    try:
        shutil.copytree(source, tmp, copy_function=link)
        for path in [tmp, *tmp.rglob("*")]:
            if path.is_dir():
                os.chmod(path, 0o555)
        os.rename(tmp, target)
    except OSError:
        force_rmtree(tmp)
        if not target.exists():
            raise
        # a concurrent linker won: same digest, same bytes
    except BaseException:
        force_rmtree(tmp)
        raise


__all__ = [
    "GO_FD", "GROUP_RECORD", "REPLICA_GO_FD", "REPLICA_REPORT_FD", "REPORT_FD", "RUNTIME_MODULE",
    "TOKEN_BYTES", "UMBILICAL_INSIDE", "Launcher",
]

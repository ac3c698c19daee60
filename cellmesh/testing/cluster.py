"""Replica groups for tests and benchmarks, without a root: in one Trio run, or as processes.

Theory of operation
-------------------
Both helpers lay a group out exactly as the root does (the replica
contract, docs/replicated.md): under ``<directory>/run`` the group's one
client socket ``<name>.sock`` (bound here, shared by every replica) and the
peer sockets ``.replicas/<name>/<i>.sock``; each replica's data directory
is ``<directory>/data/<i>``. Clients connect with
``Synapse.grow(name, socket_dir=group.socket_dir)``.

* :func:`open_replica_group` serves each replica with
  :func:`~cellmesh.actors.runtime.serve_cell` inside the caller's Trio run
  (fast, deterministic enough for most tests). :meth:`ReplicaGroup.stop`
  cancels a replica abruptly (its connections close, its WAL stays);
  :meth:`ReplicaGroup.start` brings it back from its WAL.
* :func:`process_replica_group` runs each replica as
  ``python -m cellmesh.actors.runtime`` (the client listener as fd 3, its
  peer listener as fd 4, as the root passes them): :meth:`ProcessGroup.kill`
  is ``kill -9``, :meth:`ProcessGroup.pause` / :meth:`ProcessGroup.resume`
  are SIGSTOP / SIGCONT. Leaving the block kills every process.

:class:`GroupAdmin` (both) talks to the replicas' peer sockets: their
:class:`~cellmesh.actors.control.ReplicaStats`, the leader, state digests
and the membership requests the root would send.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from ..actors.control import ReplicaStats
from ..actors.replicated import ReplicatedCell
from ..actors.replicated_proteins import (
    AddReplica,
    AdminDone,
    AdminRefused,
    RemoveReplica,
    ReplicaStatusRequest,
    StateDigest,
    StateDigestRequest,
    TransferLeadership,
)
from ..actors.runtime import serve_cell
from ..errors import CellmeshError, CellUnavailable
from ..sandbox import Workload, WorkloadEnv, spawn_isolated_workload
from ..transport._sockets import bind_unix_listener
from ..transport.synapse import Synapse

_POLL: Final = 0.01


def replica_env(
    name: str, replica: int, peers: Mapping[int, Path], *, bootstrap: Sequence[int] | None
) -> dict[str, str]:
    """The ``CELL_REPLICA_*`` variables of replica ``replica`` (bootstrap None: join)."""
    env = {
        "CELL_REPLICA_ID": str(replica),
        "CELL_REPLICA_PEERS": ",".join(f"{i}={p}" for i, p in sorted(peers.items())),
    }
    if bootstrap is None:
        env["CELL_REPLICA_JOIN"] = "1"
    else:
        env["CELL_REPLICA_BOOTSTRAP"] = ",".join(map(str, bootstrap))
    del name
    return env


@attrs.define(eq=False)
class GroupAdmin:
    """Talk to a group's peer sockets (status, digests, membership), as the root does."""

    name: str
    socket_dir: Path
    members: list[int]

    def peer_path(self, replica: int) -> Path:
        """Replica ``replica``'s peer socket."""
        return self.socket_dir / ".replicas" / self.name / f"{replica}.sock"

    @asynccontextmanager
    async def peer(self, replica: int) -> AsyncIterator[Synapse]:
        """A synapse to replica ``replica``'s peer socket."""
        async with Synapse.grow(
            self.name, socket_path=self.peer_path(replica), client_name="test"
        ) as syn:
            yield syn

    async def ask(self, replica: int, msg: Any) -> Any:
        """One request to replica ``replica``'s peer socket."""
        async with self.peer(replica) as syn:
            return await syn.fire(msg)

    async def stats(self, replica: int) -> ReplicaStats:
        """Replica ``replica``'s Raft view (CellUnavailable if it is down)."""
        reply = await self.ask(replica, ReplicaStatusRequest())
        assert isinstance(reply, ReplicaStats)
        return reply

    async def digest(self, replica: int) -> StateDigest:
        """The digest of replica ``replica``'s replicated state."""
        reply = await self.ask(replica, StateDigestRequest())
        assert isinstance(reply, StateDigest)
        return reply

    async def leader(self, among: Sequence[int] | None = None) -> int:
        """Poll the replicas until one reports itself leader; return its id."""
        while True:
            for replica in among if among is not None else self.members:
                with contextlib.suppress(CellUnavailable):
                    if (await self.stats(replica)).role == "leader":
                        return replica
            await trio.sleep(_POLL)  # an election is in progress

    async def admin(self, msg: Any) -> AdminDone:
        """Send a membership request to the leader (retrying at hints); AdminDone or raise."""
        while True:
            leader = await self.leader()
            try:
                reply = await self.ask(leader, msg)
            except CellUnavailable:
                continue
            if isinstance(reply, AdminDone):
                return reply
            assert isinstance(reply, AdminRefused)
            if reply.code != "not_leader":
                raise CellmeshError(f"{type(msg).__name__} refused: {reply.code}: {reply.reason}")
            await trio.sleep(_POLL)

    async def add(self, replica: int) -> AdminDone:
        """Ask the leader to add replica ``replica`` (learner, catch up, voter)."""
        return await self.admin(AddReplica(id=replica, path=str(self.peer_path(replica))))

    async def remove(self, replica: int) -> AdminDone:
        """Ask the leader to remove replica ``replica``."""
        return await self.admin(RemoveReplica(id=replica))

    async def transfer(self, to: int | None) -> AdminDone:
        """Ask the leader to hand leadership to ``to``."""
        return await self.admin(TransferLeadership(to=to))

    async def wait_converged(self, replicas: Sequence[int] | None = None) -> list[StateDigest]:
        """Wait until the replicas applied the same index with equal state; their digests."""
        which = list(replicas if replicas is not None else self.members)
        while True:
            try:
                digests = [await self.digest(r) for r in which]
            except CellUnavailable:
                await trio.sleep(_POLL)
                continue
            if len({(d.applied_index, d.sha256) for d in digests}) == 1:
                stats = [await self.stats(r) for r in which]
                if all(s.applied_index == s.commit_index for s in stats):
                    return digests
            await trio.sleep(_POLL)


def _client_listener(socket_dir: Path, name: str) -> socket.socket:
    return bind_unix_listener(socket_dir / f"{name}.sock")


# ---------------------------------------------------------------- in one Trio run


@attrs.define(eq=False)
class ReplicaGroup(GroupAdmin):
    """Replicas served in the caller's Trio run; see :func:`open_replica_group`."""

    cell_class: type[ReplicatedCell] = ReplicatedCell
    directory: Path = Path()
    listener: socket.socket | None = None
    nursery: trio.Nursery | None = None
    bootstrap: tuple[int, ...] = ()
    extra_env: dict[str, str] = attrs.Factory(dict)
    scopes: dict[int, trio.CancelScope] = attrs.Factory(dict)
    cells: dict[int, ReplicatedCell] = attrs.Factory(dict)
    _done: dict[int, trio.Event] = attrs.Factory(dict)

    def data_dir(self, replica: int) -> Path:
        """Replica ``replica``'s data directory."""
        return self.directory / "data" / str(replica)

    async def start(self, replica: int, *, join: bool = False) -> None:
        """Start (or restart, from its data) replica ``replica``."""
        assert self.nursery is not None and self.listener is not None
        if replica not in self.members:
            self.members.append(replica)
        peers = {i: self.peer_path(i) for i in self.members}
        env = replica_env(
            self.name, replica, peers, bootstrap=None if join else self.bootstrap
        ) | self.extra_env
        fd = os.dup(self.listener.fileno())
        cell = self.cell_class()
        self.cells[replica] = cell
        scope = trio.CancelScope()
        done = trio.Event()
        self.scopes[replica] = scope
        self._done[replica] = done

        async def run() -> None:
            try:
                with scope:
                    await serve_cell(
                        cell, name=self.name, listen_fd=fd, socket_dir=self.socket_dir,
                        data_dir=self.data_dir(replica), env=env,
                    )
            finally:
                os.close(fd)
                done.set()

        self.nursery.start_soon(run)

    async def stop(self, replica: int) -> None:
        """Cancel replica ``replica`` (abruptly) and wait until it is gone."""
        self.scopes[replica].cancel()
        await self._done[replica].wait()


@asynccontextmanager
async def open_replica_group(
    cell_class: type[ReplicatedCell],
    *,
    replicas: int = 3,
    name: str = "group",
    directory: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[ReplicaGroup]:
    """Serve ``replicas`` replicas of ``cell_class`` in this Trio run for the block.

    ``directory`` defaults to a fresh temporary directory (removed after).
    ``env`` adds variables to every replica's env (``CELL_REPLICA_CHECK``).
    """
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = Path(stack.enter_context(
                tempfile.TemporaryDirectory(prefix="cmg-", dir="/tmp")
            ))
        socket_dir = directory / "run"
        listener = _client_listener(socket_dir, name)
        stack.callback(listener.close)
        (socket_dir / ".replicas" / name).mkdir(parents=True, exist_ok=True, mode=0o700)
        async with trio.open_nursery() as nursery:
            group = ReplicaGroup(
                name=name, socket_dir=socket_dir, members=list(range(replicas)),
                cell_class=cell_class,
                directory=directory, listener=listener, nursery=nursery,
                bootstrap=tuple(range(replicas)), extra_env=dict(env or {}),
            )
            for replica in range(replicas):
                await group.start(replica)
            try:
                yield group
            finally:
                nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- processes


@attrs.define(eq=False)
class ProcessGroup(GroupAdmin):
    """Replica processes; see :func:`process_replica_group`."""

    entry: str = ""
    directory: Path = Path()
    listener: socket.socket | None = None
    bootstrap: tuple[int, ...] = ()
    extra_env: dict[str, str] = attrs.Factory(dict)
    procs: dict[int, Workload] = attrs.Factory(dict)
    peer_listeners: dict[int, socket.socket] = attrs.Factory(dict)
    logs: dict[int, Path] = attrs.Factory(dict)

    def data_dir(self, replica: int) -> Path:
        """Replica ``replica``'s data directory."""
        return self.directory / "data" / str(replica)

    def start(self, replica: int, *, join: bool = False) -> Workload:
        """Start (or restart, from its data) replica ``replica`` as a process."""
        assert self.listener is not None
        if replica not in self.members:
            self.members.append(replica)
        peer = self.peer_listeners.get(replica)
        if peer is None:
            peer = bind_unix_listener(self.peer_path(replica), mode=0o666)
            self.peer_listeners[replica] = peer
        peers = {i: self.peer_path(i) for i in self.members}
        env = {
            "CELL_NAME": self.name,
            "CELL_ENTRY": self.entry,
            "CELL_SOCKET_DIR": str(self.socket_dir),
            "CELL_DATA_DIR": str(self.data_dir(replica)),
            "CELL_LISTEN_FDS": "2",
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        } | replica_env(
            self.name, replica, peers, bootstrap=None if join else self.bootstrap
        ) | self.extra_env
        log = self.directory / f"replica-{replica}.log"
        self.logs[replica] = log
        with open(log, "ab") as out:
            proc = spawn_isolated_workload(
                [sys.executable, "-m", "cellmesh.actors.runtime"],
                WorkloadEnv(items=env),
                pass_fds=[self.listener.fileno(), peer.fileno()],
                stdout=out.fileno(),
            )
        self.procs[replica] = proc
        return proc

    def kill(self, replica: int) -> None:
        """``kill -9`` replica ``replica`` and reap it."""
        proc = self.procs.pop(replica)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.close()

    def pause(self, replica: int) -> None:
        """SIGSTOP replica ``replica``."""
        os.kill(self.procs[replica].pid, signal.SIGSTOP)

    def resume(self, replica: int) -> None:
        """SIGCONT replica ``replica``."""
        os.kill(self.procs[replica].pid, signal.SIGCONT)

    def terminate(self, replica: int, timeout: float = 10.0) -> int:
        """SIGTERM replica ``replica``; its exit code."""
        proc = self.procs.pop(replica)
        os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout)
        proc.close()
        return code

    def log_text(self, replica: int) -> str:
        """What replica ``replica`` wrote to stdout/stderr."""
        return self.logs[replica].read_text(errors="replace")

    def close(self) -> None:
        """Kill every process and close the listeners."""
        for replica in list(self.procs):
            self.kill(replica)
        for sock in self.peer_listeners.values():
            sock.close()
        if self.listener is not None:
            self.listener.close()


@contextmanager
def process_replica_group(
    entry: str,
    *,
    replicas: int = 3,
    name: str = "group",
    directory: Path | None = None,
    env: Mapping[str, str] | None = None,
    start: bool = True,
) -> Iterator[ProcessGroup]:
    """Run ``replicas`` replica processes of ``entry`` (``module:Class``); kill them on exit.

    The module must be importable from this process's ``sys.path``.
    """
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = Path(stack.enter_context(
                tempfile.TemporaryDirectory(prefix="cmp-", dir="/tmp")
            ))
        socket_dir = directory / "run"
        group = ProcessGroup(
            name=name, socket_dir=socket_dir, members=list(range(replicas)), entry=entry,
            directory=directory,
            listener=_client_listener(socket_dir, name), bootstrap=tuple(range(replicas)),
            extra_env=dict(env or {}),
        )
        stack.callback(group.close)
        (socket_dir / ".replicas" / name).mkdir(parents=True, exist_ok=True, mode=0o700)
        if start:
            for replica in range(replicas):
                group.start(replica)
        yield group


__all__ = [
    "GroupAdmin",
    "ProcessGroup",
    "ReplicaGroup",
    "open_replica_group",
    "process_replica_group",
    "replica_env",
]

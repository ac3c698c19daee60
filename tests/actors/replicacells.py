"""Cells for the root's replica plumbing tests (this file is their DNA).

:class:`Observer` is a small real :class:`cellmesh.ReplicatedCell` (a log of
notes) that also reports, from inside each replica, what the root gave it:
on every start it writes ``observed.json`` into its own data directory --
its ``CELL_*`` environment, what fds 3 and 4 are, and whether it can connect
to each peer socket it was told about. It refuses to start while its data
directory holds a ``poison`` file (whose text becomes its last line of
output, like a damaged log's error).

:class:`Outsider` is a plain cell that tries what it must not: reach a
group's peer sockets, pose as a replica on its umbilical, change a group.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import cbor2
import trio

import cellmesh
from cellmesh.actors.control import ReplicaStats
from cellmesh.actors.replicated import ReplicatedCell, query


@cellmesh.protein("t.rep.Note")
class Note:
    text: str


@cellmesh.protein("t.rep.Noted")
class Noted:
    index: int


@cellmesh.protein("t.rep.GetNotes")
class GetNotes:
    pass


@cellmesh.protein("t.rep.Notes")
class Notes:
    notes: list[str]


@cellmesh.protein("t.rep.Describe")
class Describe:
    pass


@cellmesh.protein("t.rep.Description")
class Description:
    replica: int
    name: str
    pid: int


@cellmesh.protein("t.rep.Probe")
class Probe:
    """Connect to a Unix socket path; answer what happened."""

    path: str


@cellmesh.protein("t.rep.Probed")
class Probed:
    ok: bool
    error: str


@cellmesh.protein("t.rep.Lie")
class Lie:
    """Send these stats on the umbilical as they are (an attack on the root's bookkeeping)."""

    stats: ReplicaStats


@cellmesh.protein("t.rep.AskRoot")
class AskRoot:
    """Ask the root, over the umbilical, to change group ``grp`` to ``count`` replicas."""

    count: int


@cellmesh.protein("t.rep.Answer")
class Answer:
    text: str


@cellmesh.protein("t.rep.Watch")
class Watch:
    """Monitor ``target``; answer the CellDown notices received so far."""

    target: str


@cellmesh.protein("t.rep.Downs")
class Downs:
    downs: list[str]


def fd_kind(fd: int) -> str:
    """``unix:<path>`` when ``fd`` is a listening Unix socket, else what it is."""
    try:
        st = os.fstat(fd)
    except OSError as exc:
        return f"closed ({exc.strerror})"
    if not stat.S_ISSOCK(st.st_mode):
        return "not a socket"
    sock = socket.socket(fileno=os.dup(fd))
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        return f"unix:{sock.getsockname()}" if listening else "not listening"
    finally:
        sock.close()


def probe(path: str) -> Probed:
    """Connect to ``path`` (blocking, at once: a listener's backlog answers)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    try:
        sock.connect(path)
    except OSError as exc:
        return Probed(ok=False, error=f"{type(exc).__name__}: {exc}")
    finally:
        sock.close()
    return Probed(ok=True, error="")


class Observer(ReplicatedCell):
    """A replicated log of notes that reports what the root gave it (module doc)."""

    commands = (Note,)

    def __init__(self) -> None:
        self.notes: list[str] = []

    @asynccontextmanager
    async def _open_runtime(self, ctx: Any) -> AsyncIterator[None]:
        data = ctx.data_dir
        while data is not None and (data / "hang").exists():
            await trio.sleep(0.05)  # before its Raft node opens: no part until it goes
        async with super()._open_runtime(ctx):
            yield

    async def on_start(self) -> None:
        data = self.data_dir
        assert data is not None
        poison = data / "poison"
        if poison.exists():
            raise RuntimeError(poison.read_text().strip())

        env = {k: v for k, v in os.environ.items() if k.startswith("CELL_")}
        peers = dict(p.split("=", 1) for p in env["CELL_REPLICA_PEERS"].split(","))
        starts = data / "starts"
        count = int(starts.read_text()) + 1 if starts.exists() else 1
        starts.write_text(str(count))
        observed: dict[str, Any] = {
            "pid": os.getpid(), "name": self.name, "env": env, "fd3": fd_kind(3),
            "fd4": fd_kind(4), "probes": {i: probe(path).error for i, path in peers.items()},
            "starts": count,
        }
        tmp = data / "observed.json.tmp"
        tmp.write_text(json.dumps(observed))
        os.replace(tmp, data / "observed.json")

    def apply(self, command: Any, meta: Any) -> Noted:
        self.notes.append(command.text)
        return Noted(index=meta.index)

    @query
    def get_notes(self, q: GetNotes) -> Notes:
        return Notes(notes=list(self.notes))

    @query(stale=True)
    def describe(self, q: Describe) -> Description:
        return Description(
            replica=int(os.environ["CELL_REPLICA_ID"]), name=self.name, pid=os.getpid()
        )

    def snapshot(self) -> bytes:
        return cbor2.dumps(self.notes)

    def restore(self, data: bytes) -> None:
        self.notes = list(cbor2.loads(data))


class Outsider(cellmesh.Cell):
    """A plain cell that tries what it must not (module doc), and watches replicas."""

    downs: list[str]

    async def on_start(self) -> None:
        self.downs = []

    async def on_cell_down(self, down: cellmesh.CellDown) -> None:
        self.downs.append(f"{down.name}:{down.reason}")

    @cellmesh.receptor
    async def watch(self, msg: Watch) -> Downs:
        if msg.target:
            await self.monitor(msg.target)
        return Downs(downs=list(self.downs))

    @cellmesh.receptor
    async def probe(self, msg: Probe) -> Probed:
        return probe(msg.path)

    @cellmesh.receptor
    async def describe(self, msg: Describe) -> Description:
        reply: Description = await self.call("grp", Describe())
        return reply

    @cellmesh.receptor
    async def lie(self, msg: Lie) -> Noted:
        umbilical = self._context().umbilical
        assert umbilical is not None
        await umbilical.signal(msg.stats)
        return Noted(index=0)

    @cellmesh.receptor
    async def ask_root(self, msg: AskRoot) -> Answer:
        from cellmesh.actors.control import ChangeReplicas

        try:
            reply = await self._context().ask_root(ChangeReplicas(name="grp", count=msg.count))
        except cellmesh.CellmeshError as exc:
            return Answer(text=f"refused: {exc}")
        return Answer(text=f"accepted: {reply!r}")

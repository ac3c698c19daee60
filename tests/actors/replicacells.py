"""Stand-in replicas for the root's replica plumbing tests (this file is their DNA).

:class:`FakeReplica` is a plain cell that behaves, towards the root, like a
replica of a replicated cell: it checks the replica contract's env and fds,
serves a second membrane on its peer listener (fd 4) so a test can reach one
replica in particular, and sends :class:`ReplicaStats` it is told to. It is
not Raft: the consensus itself is tested with the real ``ReplicatedCell``
(``test_replicas_root_bank.py``).
"""

from __future__ import annotations

import os
import socket
import stat

import trio

import cellmesh
from cellmesh.actors.control import ReplicaStats
from cellmesh.transport.membrane import open_membrane

TOKEN = os.urandom(8).hex()


@cellmesh.protein("t.rep.Describe")
class Describe:
    pass


@cellmesh.protein("t.rep.Description")
class Description:
    replica: int
    name: str
    token: str
    env: dict[str, str]
    fd3: str
    fd4: str
    data_dir: str
    data_files: list[str]


@cellmesh.protein("t.rep.Probe")
class Probe:
    """Connect to a Unix socket path; answer what happened."""

    path: str


@cellmesh.protein("t.rep.Probed")
class Probed:
    ok: bool
    error: str
    peer: int


@cellmesh.protein("t.rep.Role")
class Role:
    """From now on report ``role`` in ``term`` with these indexes (and at once)."""

    role: str
    term: int
    leader: int
    commit_index: int
    applied_index: int
    last_index: int


@cellmesh.protein("t.rep.Done")
class Done:
    pass


@cellmesh.protein("t.rep.Lie")
class Lie:
    """Send these stats on the umbilical as they are (an attack on the root's bookkeeping)."""

    stats: ReplicaStats


@cellmesh.protein("t.rep.AskRoot")
class AskRoot:
    """Send the root a control request over the umbilical; answer what came back."""

    count: int


@cellmesh.protein("t.rep.Answer")
class Answer:
    text: str


def _listener(fd: int) -> str:
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


class FakeReplica(cellmesh.Cell):
    """A replica towards the root, without Raft (module doc).

    It refuses to start when its data dir holds ``poison`` (the file's text
    becomes its last line of output, like a WAL error), and remembers a
    ``started`` file count in its data dir to show the dir survives restarts.
    """

    async def on_start(self) -> None:
        env = os.environ
        self.replica = int(env["CELL_REPLICA_ID"])
        data = self.data_dir
        assert data is not None
        poison = data / "poison"
        if poison.exists():
            raise RuntimeError(poison.read_text().strip())
        starts = data / "starts"
        starts.write_text(str(int(starts.read_text()) + 1 if starts.exists() else 1))
        self.stats = ReplicaStats(
            replica=self.replica, role="follower", term=0, leader=None, commit_index=0,
            applied_index=0, last_index=0, voters=[], learners=[],
        )
        self.nursery.start_soon(self._serve_peers)
        self.nursery.start_soon(self._report)

    async def _serve_peers(self) -> None:
        table = {Describe: self.describe, Probe: self.probe, Role: self.role, Lie: self.lie}

        async def peer(msg: object) -> object:
            return await table[type(msg)](msg)  # type: ignore[operator]

        async with open_membrane(self.name, peer, listen_fd=4):
            await trio.sleep_forever()

    async def _report(self) -> None:
        while True:
            await self._send_stats()
            await trio.sleep(0.2)

    async def _send_stats(self) -> None:
        umbilical = self._context().umbilical
        if umbilical is not None:
            await umbilical.signal(self.stats)

    @cellmesh.receptor
    async def describe(self, msg: Describe) -> Description:
        data = self.data_dir
        assert data is not None
        keys = [k for k in os.environ if k.startswith("CELL_")]
        return Description(
            replica=self.replica, name=self.name, token=TOKEN,
            env={k: os.environ[k] for k in keys}, fd3=_listener(3), fd4=_listener(4),
            data_dir=str(data), data_files=sorted(p.name for p in data.iterdir()),
        )

    @cellmesh.receptor
    async def probe(self, msg: Probe) -> Probed:
        return await probe(msg.path)

    @cellmesh.receptor
    async def lie(self, msg: Lie) -> Done:
        umbilical = self._context().umbilical
        assert umbilical is not None
        await umbilical.signal(msg.stats)
        return Done()

    @cellmesh.receptor
    async def role(self, msg: Role) -> Done:
        voters = [int(p.split("=")[0]) for p in os.environ["CELL_REPLICA_PEERS"].split(",")]
        self.stats = ReplicaStats(
            replica=self.replica, role=msg.role, term=msg.term,
            leader=None if msg.leader < 0 else msg.leader, commit_index=msg.commit_index,
            applied_index=msg.applied_index, last_index=msg.last_index, voters=voters,
            learners=[],
        )
        await self._send_stats()
        return Done()


async def probe(path: str) -> Probed:
    """Connect to ``path`` and ask who answers (a fake replica's peer membrane).

    A plain ``connect`` first, so a refusal names the OS error (FileNotFoundError:
    nothing at that path in this sandbox; PermissionError: there, but not for us).
    """
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.connect(path)
    except OSError as exc:
        return Probed(ok=False, error=f"{type(exc).__name__}: {exc}", peer=-1)
    finally:
        sock.close()
    try:
        with trio.fail_after(10):
            async with cellmesh.Synapse.grow("peer", socket_path=path, connect_timeout=2) as syn:
                who = await syn.fire(Describe())
        return Probed(ok=True, error="", peer=who.replica)
    except (OSError, cellmesh.CellmeshError, trio.TooSlowError) as exc:
        return Probed(ok=False, error=f"{type(exc).__name__}: {exc}", peer=-1)


class Outsider(cellmesh.Cell):
    """A plain cell that tries to reach a group's peer sockets (it must not), poses as a
    replica on its umbilical and asks the root to change the group (it may not)."""

    @cellmesh.receptor
    async def lie(self, msg: Lie) -> Done:
        umbilical = self._context().umbilical
        assert umbilical is not None
        await umbilical.signal(msg.stats)
        return Done()

    @cellmesh.receptor
    async def ask_root(self, msg: AskRoot) -> Answer:
        from cellmesh.actors.control import ChangeReplicas

        try:
            reply = await self._context().ask_root(ChangeReplicas(name="grp", count=msg.count))
        except cellmesh.CellmeshError as exc:
            return Answer(text=f"refused: {exc}")
        return Answer(text=f"accepted: {reply!r}")

    @cellmesh.receptor
    async def probe(self, msg: Probe) -> Probed:
        return await probe(msg.path)

    @cellmesh.receptor
    async def describe(self, msg: Describe) -> Description:
        reply: Description = await self.call("grp", Describe())
        return reply

"""A replicated cell's group in the root: its members, their supervision, its record file.

Theory of operation
-------------------
A :class:`Group` is a replicated cell as the root keeps it for its whole
life: its client socket, its peer directory, its record (``group.json``) and
one :class:`Member` per replica ``X/i`` (a slot of the root, with its peer
socket and data directory). :mod:`cellmesh.actors._replicas` makes them.

Supervision. The group is one child of its manifest supervisor; each run of
it is a :class:`GroupHandle`, which runs one small one-for-one supervisor per
replica (intensity :data:`REPLICA_INTENSITY` in :data:`REPLICA_PERIOD`
seconds, the replica ``transient``: a replica that stops itself normally --
removed from the group -- is not restarted). So a replica's crash restarts
that replica alone, each with its own restart budget: a replica that cannot
start (a damaged log) exhausts only its own and is *given up* (its
supervisor ends; the group keeps serving). The handle starts the replicas
concurrently and is started once a majority is ready; it fails (to start,
or later: an abnormal exit its parent supervisor handles like any child's)
only when fewer than a majority of the members are left. Each replica keeps
its own standby (the launcher's business).

Files: :func:`load_record` / :func:`write_record` keep the group record
(atomically, durably), :func:`bind_peer` binds a replica's peer listener,
:func:`wipe_data_dir` empties a stopped replica's data directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Final, Protocol

import attrs
import trio

from ..errors import CellmeshError
from ._cells import CellSlot, ReplicaPart
from ._launch import GROUP_RECORD
from .control import ReplicaStats
from .errors import RootRequestError, SupervisorEscalation
from .manifest import CellDecl
from .membership import GroupRecord, GroupRecordError, GroupView, majority, replica_name
from .policy import (
    AbnormalExit,
    ChildSpec,
    ExitReason,
    Restart,
    ShutdownExit,
    Strategy,
    SupervisorSpec,
)
from .supervisor import ChildFactory, Supervisor, SupervisorEvent

#: Restarts one replica may have in :data:`REPLICA_PERIOD` before it is given up.
REPLICA_INTENSITY: Final = 5
#: The window of :data:`REPLICA_INTENSITY`, in seconds.
REPLICA_PERIOD: Final = 10.0
#: A replica whose last stats are older than this (seconds; it reports every
#: second) does not count towards the quorum a membership change needs.
STATS_FRESH: Final = 3.0
#: The group record's file name inside ``$CELL_HOME/data/X/``.
RECORD_NAME: Final = GROUP_RECORD


class GroupHost(Protocol):
    """What a :class:`GroupHandle` needs from the root's replica manager."""

    @property
    def factory(self) -> ChildFactory:
        """Starts a replica's process (the root)."""
        ...

    def event_sink(self, group: str) -> Callable[[SupervisorEvent], None]:
        """Where the per-replica supervisors' events go."""
        ...

    def group_started(self, group: Group, nursery: trio.Nursery) -> None:
        """A run of ``group`` is up (``nursery`` lives as long as it)."""
        ...

    def gave_up(self, group: Group, m: Member, exc: SupervisorEscalation) -> None:
        """``m``'s supervisor gave up on it."""
        ...

    def record(self, cell: str, reason: str) -> None:
        """Add to the root's restart log."""
        ...

    def log(self, text: str) -> None:
        """Write a line to root.log."""
        ...


@attrs.define(eq=False)
class Member:
    """One member of a group: its slot, and the supervisor running it (when it runs)."""

    id: int
    slot: CellSlot
    sup: Supervisor | None = None

    @property
    def part(self) -> ReplicaPart:
        """The slot's replica part."""
        assert self.slot.replica is not None
        return self.slot.replica

    @property
    def running(self) -> bool:
        """It has a process that is starting or serving."""
        instance = self.slot.instance
        return instance is not None and instance.state in ("starting", "running")

    def answering(self, now: float) -> bool:
        """It runs and its stats came within :data:`STATS_FRESH` seconds of ``now``
        (``trio.current_time()``): a stopped (SIGSTOP) or hung process still
        runs to its supervisor, but it cannot help a quorum."""
        return (self.running and self.part.stats is not None
                and now - self.part.stats_at <= STATS_FRESH)


@attrs.define(eq=False)
class Group:
    """A replicated cell the root runs (module doc); outlives each :class:`GroupHandle`."""

    name: str
    decl: CellDecl
    supervisor: str
    socket_path: Path
    listener: socket.socket
    peers_dir: Path
    data_dir: Path
    record: GroupRecord
    target: int
    members: dict[int, Member] = attrs.Factory(dict)
    handle: GroupHandle | None = None
    change: str = ""
    error: str = ""
    lock: trio.Lock = attrs.Factory(trio.Lock)
    changed: trio.Event = attrs.Factory(trio.Event)

    def touch(self) -> None:
        """Wake whoever waits for the group's stats or members to change."""
        self.changed.set()
        self.changed = trio.Event()

    def stats(self) -> dict[int, ReplicaStats]:
        """The latest stats of every member that has a process."""
        out: dict[int, ReplicaStats] = {}
        for i, m in self.members.items():
            if m.running and m.part.stats is not None:
                out[i] = m.part.stats
        return out

    def view(self) -> GroupView:
        """The leader, its term and log end, from the running members' stats."""
        return GroupView.of(self.stats().values())

    def peer_path(self, replica: int) -> Path:
        """The host path of ``replica``'s peer socket."""
        return self.peers_dir / f"{replica}.sock"

    async def save(self, record: GroupRecord) -> None:
        """Make ``record`` the group's, durably (``group.json``), and tell the waiters.

        The record in memory changes only once the file has: a write that fails
        (a full disk) is a :class:`RootRequestError` naming the file, and leaves
        the group as it was, so the change can be asked for again.
        """
        try:
            await trio.to_thread.run_sync(write_record, self.data_dir, record)
        except OSError as exc:
            raise RootRequestError(
                self.name, f"cannot write {self.data_dir / RECORD_NAME}: {exc.strerror or exc}"
            ) from exc
        self.record = record
        self.touch()


@attrs.define(eq=False)
class GroupHandle:
    """One run of a group, as its supervisor's child handle (module doc).

    ``wait`` returns ``shutdown`` after a stop, ``AbnormalExit`` when the group
    lost its quorum. The task is shielded: the parent stops it with
    ``terminate`` (every replica stopped concurrently, each with its
    shutdown) or ``kill``.
    """

    group: Group
    manager: GroupHost
    _scope: trio.CancelScope = attrs.field(factory=lambda: trio.CancelScope(shield=True))
    _nursery: trio.Nursery | None = None
    _end: trio.Event = attrs.Factory(trio.Event)
    _done: trio.Event = attrs.Factory(trio.Event)
    _reason: ExitReason = attrs.Factory(ShutdownExit)
    _brutal: bool = False

    @property
    def running(self) -> bool:
        """This run has started its members and has not ended."""
        return self._nursery is not None and not self._end.is_set()

    # ------------------------------------------------------------ ChildHandle

    async def wait(self) -> ExitReason:
        """Wait until this run of the group has ended."""
        await self._done.wait()
        return self._reason

    def terminate(self) -> None:
        """Stop every replica (concurrently, each with its shutdown) and end."""
        self._end.set()

    def kill(self) -> None:
        """Kill every replica at once and end."""
        self._brutal = True
        for m in self.group.members.values():
            if m.sup is not None:
                m.sup.kill()
        self._end.set()
        self._scope.cancel()

    # ------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Start the members concurrently; started once a majority is ready (module doc)."""
        group = self.group
        refused: str | None = None
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    failed = await self._start_all(list(group.members.values()))
                    if failed is not None:
                        refused = self._no_quorum(failed)
                    else:
                        task_status.started()
                        self.manager.group_started(group, nursery)
                        await self._end.wait()
                    await self._stop_all()
                    nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            self._done.set()
            group.touch()
        if refused is not None:
            raise RootRequestError(group.name, refused)  # a start failure for the parent

    def _no_quorum(self, failed: dict[int, str]) -> str:
        """Why the group cannot start: the replicas that failed so far (the others may be
        starting still: nothing is said of them, they may fail too)."""
        group = self.group
        why = "; ".join(
            f"{replica_name(group.name, i)}: {text}" for i, text in sorted(failed.items())
        )
        return (
            f"{len(failed)} of {len(group.members)} replicas could not start "
            f"(a majority is {majority(len(group.members))}): {why}"
        )

    async def _start_all(self, members: list[Member]) -> dict[int, str] | None:
        """Start every member concurrently; return once a majority is ready (None), or
        once that has become impossible (the failures so far, by replica).

        The members still starting go on in the background: a later failure
        is a given-up replica like any other.
        """
        group = self.group
        need = majority(len(group.members))
        failed: dict[int, str] = {}
        counts = {"ready": 0, "pending": len(members)}
        decided = trio.Event()

        async def one(m: Member) -> None:
            try:
                await self.start_member(m)
                counts["ready"] += 1
            except (SupervisorEscalation, RootRequestError) as exc:
                failed[m.id] = m.part.failure() or str(exc)
                if decided.is_set():
                    self._check_quorum()
            finally:
                counts["pending"] -= 1
                if counts["ready"] >= need or counts["ready"] + counts["pending"] < need:
                    decided.set()

        assert self._nursery is not None
        for m in members:
            self._nursery.start_soon(one, m)
        await decided.wait()
        return None if counts["ready"] >= need else dict(failed)

    async def start_member(self, m: Member) -> None:
        """Start ``m``'s supervisor (and so its replica); raise if it cannot start."""
        if self._nursery is None or self._end.is_set():
            raise RootRequestError(self.group.name, "the group is not running")
        await self._nursery.start(self._run_member, m)

    async def stop_member(self, m: Member) -> None:
        """Stop ``m``'s supervisor and replica (for good in this run)."""
        sup = m.sup
        if sup is not None:
            await sup.stop()

    async def _run_member(self, m: Member, *, task_status: trio.TaskStatus[Supervisor]) -> None:
        group = self.group
        name = replica_name(group.name, m.id)
        spec = SupervisorSpec(
            strategy=Strategy.ONE_FOR_ONE, intensity=REPLICA_INTENSITY, period=REPLICA_PERIOD,
            children=(ChildSpec(
                id=name, restart=Restart.TRANSIENT, shutdown=group.decl.shutdown,
                args=("cell", name),
            ),),
        )  # fmt: skip
        sup = Supervisor(spec, self.manager.factory, self.manager.event_sink(group.name))
        m.sup = sup
        m.part.given_up = False
        try:
            await sup.run(task_status=task_status)
        except SupervisorEscalation as exc:
            if not sup.started:
                m.part.given_up = True
                raise
            m.part.given_up = True
            self.manager.gave_up(group, m, exc)
            self._check_quorum()
        finally:
            if m.sup is sup:
                m.sup = None
            group.touch()

    def _check_quorum(self) -> None:
        group = self.group
        lost = [i for i, m in group.members.items() if m.part.given_up]
        if len(group.members) - len(lost) < majority(len(group.members)):
            names = ", ".join(replica_name(group.name, i) for i in lost)
            self._reason = AbnormalExit(text=f"lost its quorum ({names} given up)")
            self.manager.record(group.name, f"lost its quorum: {names} given up")
            self.manager.log(
                f"root: replicated cell {group.name} lost its quorum ({names} given up): "
                "it fails to its supervisor, which restarts the whole group within its "
                "intensity"
            )
            self._end.set()

    async def _stop_all(self) -> None:
        async with trio.open_nursery() as stopper:
            for m in self.group.members.values():
                if m.sup is not None:
                    if self._brutal:
                        m.sup.kill()
                    stopper.start_soon(m.sup.stop)


# --------------------------------------------------------------------------
# Files


def bind_peer(path: Path) -> socket.socket:
    """Bind a replica's peer listener at ``path`` (``Paths.replica_peer``: its length is
    checked) in the group's peer directory (ours alone)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(os.fspath(path))
        os.chmod(path, 0o666)  # the directory (0711, inside the 0700 tree) is the gate
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def is_empty(path: Path) -> bool:
    try:
        with os.scandir(path) as entries:
            return next(entries, None) is None
    except FileNotFoundError:
        return True
    except OSError:
        return False


def reclaim_empty(data_dir: Path) -> None:
    """Make an empty ``data_dir`` that a cell's uid owns ours again (mode 0700).

    A cell that had ``data = true`` before it was made replicated leaves its data
    dir handed to its own uid; the group's directory must be the root's (its
    replicas' dirs are made under it). An empty one is simply taken back; one
    that holds data is refused by :func:`load_record`.
    """
    try:
        fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        raise GroupRecordError(str(data_dir), f"cannot be opened: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid() and is_empty(data_dir):
            os.fchown(fd, os.getuid(), os.getgid())
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def load_record(data_dir: Path, count: int) -> GroupRecord:
    """Read ``data_dir/group.json``, or create the record of a new group of ``count``."""
    reclaim_empty(data_dir)
    path = data_dir / RECORD_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as exc:
        raise GroupRecordError(str(path), f"cannot be read: {exc}") from exc
    else:
        return GroupRecord.from_json(text, source=str(path))
    with contextlib.suppress(FileNotFoundError):
        (data_dir / f".{RECORD_NAME}.tmp").unlink()  # a first write that never finished
    if not is_empty(data_dir):
        raise GroupRecordError(
            str(data_dir),
            f"holds data but no {RECORD_NAME}: it belongs to a cell that was not replicated "
            "(or the record was lost); move it away to start the group empty",
        )
    record = GroupRecord.create(count)
    write_record(data_dir, record)
    return record


def write_record(data_dir: Path, record: GroupRecord) -> None:
    """Replace ``group.json`` atomically and durably (temp file, fsync, rename, dir fsync)."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = data_dir / f".{RECORD_NAME}.tmp"
    fd = os.open(
        tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
    )
    try:
        data = memoryview(record.to_json().encode())
        while data:
            data = data[os.write(fd, data):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()  # (a full disk: give its space back)
        raise
    os.close(fd)
    os.replace(tmp, data_dir / RECORD_NAME)
    dir_fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def wipe_data_dir(path: Path, replica: int) -> str:
    """Wipe stopped replica ``replica``'s data directory ``path``; say how.

    The replica's Raft log goes through the consensus library's documented
    way back (:func:`cellmesh.consensus.wipe_replica`, docs/consensus.md
    "Wiping a replica"): every segment and snapshot deleted, the directory
    left *joining* (the replica votes again only once the leader promotes
    it). The replica runtime's identity file (``replica.cbor``) is kept when
    it is this replica's and readable; anything else in the directory goes.
    When there is no log to wipe, or the identity is not this replica's or
    is damaged, the whole directory is emptied instead: the replica then
    starts as a brand-new joiner (``CELL_REPLICA_JOIN=1``), the same end.
    """
    from ..consensus import WalError, wipe_replica
    from ._replica_runtime import IDENTITY, RAFT_DIR, _read_identity

    raft, ident = path / RAFT_DIR, path / IDENTITY
    try:
        owner, _, _ = _read_identity(ident, ident.read_bytes())
    except (OSError, CellmeshError):
        owner = None
    if owner == replica and raft.is_dir():
        try:
            wipe_replica(raft)
        except WalError:
            pass  # its log directory is beyond the library's repair: start afresh
        else:
            _empty_dir(path, keep={IDENTITY, RAFT_DIR})
            _give_back(path)
            return "its log wiped (joining), its identity kept"
    _empty_dir(path, keep=set())
    return "its data directory emptied"


def _give_back(path: Path) -> None:
    """Hand what the wipe wrote (as the root) to the owner of the data directory.

    Under bwrap a replica runs as another uid, which owns its data directory;
    the files the wipe created (the log's new ``STATE``) must be its own too.
    Symlinks are not followed (``lchown``).
    """
    st = os.stat(path, follow_symlinks=False)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            entry = os.path.join(root, name)
            if os.lstat(entry).st_uid != st.st_uid:
                os.lchown(entry, st.st_uid, st.st_gid)


def _empty_dir(path: Path, *, keep: set[str]) -> None:
    """Remove every entry of ``path`` but those named in ``keep`` (symlinks are not followed)."""
    try:
        entries = list(path.iterdir())
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.name in keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


__all__ = [
    "RECORD_NAME",
    "REPLICA_INTENSITY",
    "REPLICA_PERIOD",
    "Group",
    "GroupHandle",
    "GroupHost",
    "Member",
    "bind_peer",
    "is_empty",
    "load_record",
    "wipe_data_dir",
    "write_record",
]

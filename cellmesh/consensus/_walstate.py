"""The log directory's ``STATE`` file: telling a fresh node from lost state; wiping a replica.

Theory of operation
-------------------
A crash can only take back what was not yet durable: the torn tail of the
last segment, a segment whose creation was not yet fsynced. It cannot empty
a segment that held acknowledged batches, delete one, or take back a term
or a vote that was revealed. Without more information a log truncated to
zero bytes looks like a brand-new node (term 0, no vote: it could vote twice
in a term), and a deleted last segment looks like a log that simply ends
earlier. So the directory keeps a small ``STATE`` file
(:class:`~cellmesh.consensus._walcodec.DirState`) of facts a crash cannot
undo, written after the log write it describes was made durable:

* the last durable **term and vote** -- rewritten whenever a batch changes
  them (elections: rare), so the log must hold at least these;
* the newest **segment** created durably, its first index and the size it
  had when created (header plus first batch) -- rewritten on every roll
  (once per segment), so that segment must exist and be at least that long;
* a **commit floor** (the commit index of the last record): entries up to
  it were committed, so the log or its snapshot must reach it;
* the **owner** node id, and the **joining** state of a node that joined a
  cluster with an empty log.

Each record is one fixed-size slot written with one ``pwrite`` and one
``fdatasync``, alternating between two slots so a torn write leaves the
other intact; the file itself is created by write-to-temporary, fsync,
rename and directory fsync, before any segment exists.

Recovery (:func:`check_recovered`) refuses, with :class:`WalStateLost`
naming the file, a directory whose log does not reach these facts. A
directory with log files but no ``STATE`` is refused too; a directory with
neither is a fresh node. The cost: one more ``fdatasync`` on the saves that
change the term or vote, roll a segment or change the joining state --
never on an ordinary batch.

The operator's way out of a refusal is explicit: :func:`wipe_replica`
deletes the log and leaves the directory *joining*: the node then starts
empty, takes no bootstrap configuration and never votes until the cluster
promotes it again (see :class:`~cellmesh.consensus.types.JoinState` and
docs/consensus.md, "Wiping a replica").
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Final

import attrs

from cellmesh.consensus import _walcodec as codec
from cellmesh.consensus import _walfiles as files
from cellmesh.consensus._walcodec import DirState
from cellmesh.consensus._walfiles import Syncer, WalCorrupted, WalError
from cellmesh.consensus.types import HardState

STATE_NAME: Final = "STATE"
_STATE_FILE_SIZE: Final = 2 * codec.STATE_SLOT_SIZE


class WalStateLost(WalCorrupted):
    """The directory lost state that a crash cannot lose; the node must not start.

    ``path`` names the missing or damaged file and ``reason`` what is
    missing. Starting anyway could make the node vote twice in a term or
    forget entries it acknowledged. Investigate; to rejoin from the other
    replicas, remove the node from the cluster and run :func:`wipe_replica`.
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(path, 0, reason)
        self.args = (f"{path}: {reason}; refusing to start (see wipe_replica)",)


class WalWrongNode(WalError):
    """The directory belongs to node ``owner``, not to node ``node``."""

    def __init__(self, directory: Path, owner: int, node: int) -> None:
        super().__init__(f"{directory} holds the state of node {owner}, not node {node}")
        self.directory = directory
        self.owner = owner
        self.node = node


@attrs.frozen(kw_only=True)
class WipeReport:
    """What :func:`wipe_replica` did: the files it removed, the owner it kept."""

    directory: Path
    node: int | None
    removed: tuple[Path, ...]


def segment_path(directory: Path, seq: int, first_index: int) -> Path:
    """The file name of segment ``seq`` whose first entry is ``first_index``."""
    return directory / f"wal-{seq:016x}-{first_index:016x}.log"


def read_state(directory: Path) -> DirState | None:
    """The newest valid record of ``directory/STATE``; ``None`` if the file is absent.

    Raises :class:`WalCorrupted` if the file exists but neither slot is valid
    (it is created whole, by rename, so a crash cannot leave it so).
    """
    path = directory / STATE_NAME
    try:
        image = path.read_bytes()
    except FileNotFoundError:
        return None
    state = codec.newest_state(image)
    if state is None:
        raise WalCorrupted(path, 0, "no valid record in the STATE file")
    return state


def has_log_files(directory: Path) -> bool:
    """Whether ``directory`` holds segments or snapshot files."""
    return any(
        files.SEGMENT_RE.fullmatch(name) or files.SNAPSHOT_RE.fullmatch(name)
        for name in os.listdir(directory)
    )


@attrs.define(eq=False)
class StateFile:
    """The open ``STATE`` file of a log directory; :meth:`update` makes a change durable."""

    path: Path
    state: DirState
    _syncer: Syncer
    _fd: int

    @classmethod
    def create(cls, directory: Path, state: DirState, syncer: Syncer) -> StateFile:
        """Create ``STATE`` holding ``state`` (temporary file, fsync, rename, dir fsync)."""
        path = directory / STATE_NAME
        temporary = path.with_name(STATE_NAME + files.TMP_SUFFIX)
        image = bytearray(_STATE_FILE_SIZE)
        slot = (state.sequence % 2) * codec.STATE_SLOT_SIZE
        image[slot : slot + codec.STATE_SLOT_SIZE] = codec.encode_state(state)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        fd = os.open(temporary, flags, files.FILE_MODE)
        try:
            files.write_all(fd, bytes(image), 0)
            syncer.sync_file(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
        files.sync_dir(directory, syncer)
        return cls.open(directory, state, syncer)

    @classmethod
    def open(cls, directory: Path, state: DirState, syncer: Syncer) -> StateFile:
        """Open the existing ``STATE`` whose newest record is ``state``."""
        path = directory / STATE_NAME
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        return cls(path=path, state=state, syncer=syncer, fd=fd)

    def update(self, state: DirState) -> None:
        """Durably record ``state`` (one ``pwrite`` + one ``fdatasync``); its sequence is
        set to follow the current record's.

        Records live in the slot of their sequence's parity, so the new one
        never overwrites the current one: a crash mid-write leaves it valid.
        """
        state = attrs.evolve(state, sequence=self.state.sequence + 1)
        slot = state.sequence % 2
        files.write_all(self._fd, codec.encode_state(state), slot * codec.STATE_SLOT_SIZE)
        self._syncer.sync_data(self._fd)
        self.state = state

    def close(self) -> None:
        """Close the file descriptor. Idempotent."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1


def check_segments(directory: Path, state: DirState, present: list[tuple[int, Path]]) -> None:
    """Refuse if the newest segment ``STATE`` records is missing (name it)."""
    if state.segment is None:
        return
    newest = present[-1][0] if present else None
    if newest is None or newest < state.segment:
        missing = segment_path(directory, state.segment, state.segment_index)
        raise WalStateLost(
            missing,
            "this segment is missing although STATE records that it was written durably "
            "(the log's tail was deleted)",
        )


def check_segment_size(path: Path, seq: int, state: DirState, valid_bytes: int) -> None:
    """Refuse if the segment ``STATE`` records is shorter than when it was created."""
    if state.segment == seq and valid_bytes < state.segment_size:
        raise WalStateLost(
            path,
            f"only {valid_bytes} valid bytes, but it held {state.segment_size} durably when "
            "created (the file was truncated)",
        )


def check_recovered(
    directory: Path, state: DirState, hard_state: HardState, last_index: int
) -> None:
    """Refuse a recovered log that is behind what ``STATE`` says was durable."""
    path = directory / STATE_NAME
    behind = hard_state.term < state.term or (
        hard_state.term == state.term
        and state.vote is not None
        and hard_state.vote != state.vote
    )
    if behind:
        raise WalStateLost(
            path,
            f"the log's hard state (term {hard_state.term}, vote {hard_state.vote}) is older "
            f"than the durable one recorded here (term {state.term}, vote {state.vote}): "
            "the log lost its hard state",
        )
    if last_index < state.commit:
        raise WalStateLost(
            path,
            f"the log ends at index {last_index} but entries up to {state.commit} were "
            "committed: the log lost entries",
        )


def holds_state(directory: str | os.PathLike[str]) -> bool:
    """Whether ``directory`` exists and holds a node's state (a ``STATE`` file or log files).

    A caller that knows the node ran before (it keeps its own record of that)
    uses it to tell a lost directory -- deleted or emptied whole, which looks
    exactly like a brand-new node -- from a fresh one.
    """
    path = Path(directory)
    if not path.is_dir():
        return False
    return (path / STATE_NAME).exists() or has_log_files(path)


def prepare_directory(
    directory: str | os.PathLike[str],
    *,
    node: int,
    join: bool = False,
    syncer: Syncer | None = None,
) -> None:
    """Make ``directory`` ready for node ``node``'s log before it is opened.

    A new (or empty) directory gets a ``STATE`` naming ``node`` -- and
    marking it *joining* if ``join``: the node joins an existing cluster
    with an empty log (:class:`~cellmesh.consensus.types.JoinState`). A
    directory that has a ``STATE`` must belong to ``node``
    (:class:`WalWrongNode` otherwise; one of an unknown owner is claimed).
    ``join`` is ignored for a directory that already has state. A directory
    with a log but no ``STATE`` is left for ``WriteAheadLog.open`` to refuse.
    Raises :class:`~cellmesh.consensus.wal.WalLocked` if the log is open.
    """
    path = Path(directory)
    sync = syncer if syncer is not None else files.OsSyncer()
    files.make_dir(path, sync)
    lock = files.lock_directory(path)
    try:
        state = read_state(path)
        if state is None:
            if not has_log_files(path):
                StateFile.create(path, DirState(node=node, joining=join), sync).close()
            return
        if state.node is None:
            handle = StateFile.open(path, state, sync)
            try:
                handle.update(attrs.evolve(state, node=node))
            finally:
                handle.close()
        elif state.node != node:
            raise WalWrongNode(path, state.node, node)
    finally:
        os.close(lock)


def wipe_replica(
    directory: str | os.PathLike[str], *, syncer: Syncer | None = None
) -> WipeReport:
    """Delete a replica's log and leave its directory *joining*: the operator's way back.

    Use it when a node refuses to start because its state was lost
    (:class:`WalStateLost`, :class:`~cellmesh.consensus.wal.WalCorrupted`),
    or to rebuild a replica from its peers. Removes every segment, snapshot
    and temporary file, then writes a fresh ``STATE`` that keeps the owner
    node id and marks the directory joining. The node then starts with an
    empty log, ignores the bootstrap configuration, never campaigns and never
    votes until a configuration change made after it rejoined promotes it
    (``RaftNode.add_server`` does: learner first, promoted once caught up).

    The safe order (docs/consensus.md, "Wiping a replica"): remove the node
    from the cluster (``RaftNode.remove_server`` on the leader), stop it,
    wipe it, start it, ``add_server`` it. Refuses with
    :class:`~cellmesh.consensus.wal.WalLocked` while the node runs. Files are
    removed before the new ``STATE`` is written, so a crash midway leaves a
    directory that refuses to start until the wipe is run again.
    """
    path = Path(directory)
    sync = syncer if syncer is not None else files.OsSyncer()
    if not path.is_dir():
        raise WalCorrupted(path, 0, "no such replica directory")
    lock = files.lock_directory(path)
    try:
        try:
            old = read_state(path)
        except WalCorrupted:
            old = None
        removed = []
        for name in sorted(os.listdir(path)):
            if (
                files.SEGMENT_RE.fullmatch(name)
                or files.SNAPSHOT_RE.fullmatch(name)
                or name.endswith(files.TMP_SUFFIX)
            ):
                os.unlink(path / name)
                removed.append(path / name)
        if removed:
            files.sync_dir(path, sync)
        node = old.node if old is not None else None
        sequence = old.sequence + 1 if old is not None else 0
        StateFile.create(path, DirState(sequence=sequence, node=node, joining=True), sync).close()
        return WipeReport(directory=path, node=node, removed=tuple(removed))
    finally:
        os.close(lock)


__all__ = [
    "STATE_NAME",
    "StateFile",
    "WalStateLost",
    "WalWrongNode",
    "WipeReport",
    "check_recovered",
    "check_segment_size",
    "check_segments",
    "prepare_directory",
    "read_state",
    "wipe_replica",
]

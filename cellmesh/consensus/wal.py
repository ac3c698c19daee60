"""The Raft write-ahead log: segment files, group commit, snapshots and crash recovery.

Theory of operation
-------------------
The log lives in one directory::

    LOCK                                   flock()ed while a WriteAheadLog is open
    STATE                                  facts a crash cannot undo (owner, last
                                           durable term/vote, newest segment, ...)
    wal-<seq:016x>-<index:016x>.log        segments; ``seq`` orders them, ``index``
                                           is the next log index when it was created
    snap-<index:016x>-<term:016x>.snap     the current snapshot (plus stale ones
                                           until the next compaction)

The byte format is described in :mod:`cellmesh.consensus._walcodec`. Each
:meth:`WriteAheadLog.save` writes ONE frame with ONE ``os.pwrite`` and makes it
durable with ONE ``fdatasync`` (group commit: the driver hands over everything
that accumulated while the previous save was in flight). Only when ``save``
returns may the caller reveal what it saved -- send a vote, acknowledge an
append, apply a commit index. ``save`` is thread-safe (one internal lock) so a
Trio driver may call it through ``trio.to_thread.run_sync``.

Rolling: when the next frame would push the current segment past
``segment_size``, the frame goes to a new segment instead, written in the same
single ``pwrite`` after a header frame that records the hard state and
snapshot base then current; the new file costs one extra directory fsync.

The ``STATE`` file (:mod:`cellmesh.consensus._walstate`) records what a crash
cannot take back; it is rewritten (one more ``fdatasync``) only by a save that
changes the term or vote, rolls a segment or changes a joining node's state.

Snapshots (Raft section 7): a batch may carry a :class:`Snapshot`. Its file is
written to a temporary name, fsynced, renamed and the directory fsynced
*before* the batch frame (which holds the snapshot marker) is written. After
the marker is durable, the leading segments whose entries are all covered by
the snapshot, and older snapshot files, are deleted.

Recovery (:meth:`WriteAheadLog.open`) replays every segment in ``seq`` order.
The rules for damage:

* In the LAST segment, an invalid frame after which no valid frame exists is
  the torn tail of a batch whose ``save`` never returned. It is truncated
  away (the whole file if even its header is torn) and reported in
  :attr:`Recovered.torn_tail` -- but only after everything else validated:
  a log that is refused is left exactly as found.
* Any other damage -- an invalid frame followed by a valid one, damage in an
  earlier segment, a missing segment, a checksum-valid frame whose content
  does not decode, a missing or corrupt snapshot -- is refused with
  :class:`WalCorrupted` naming the file and byte offset. Nothing is ever
  silently dropped.
* State a crash cannot lose but that is missing -- the newest segment
  ``STATE`` records (deleted), that segment shorter than when it was created
  (truncated, to zero bytes or not), a hard state older than the durable one
  (its term or vote would be forgotten), entries below the commit floor, or
  no ``STATE`` beside a log -- is refused with :class:`WalStateLost` naming
  the file. A directory with neither log nor ``STATE`` is a fresh node.
  :func:`wipe_replica` is the explicit way to start such a node over.

Failure: an ``OSError`` from any write, fsync, rename or unlink leaves the
log in an unknown state (after a failed fsync the kernel may already have
dropped the dirty pages -- the PostgreSQL "fsyncgate" lesson), so the log
stops for good: that call and every later one raise :class:`WalFailed`. The
node must stop and recover from disk; an fsync is never retried.
"""

from __future__ import annotations

import array
import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final

import attrs

from cellmesh.consensus import _walcodec as codec
from cellmesh.consensus import _walfiles as _files
from cellmesh.consensus import _walstate as _state
from cellmesh.consensus._walcodec import DirState
from cellmesh.consensus._walfiles import (
    FILE_MODE,
    SNAPSHOT_RE,
    OsSyncer,
    Syncer,
    WalCorrupted,
    WalError,
    WalFailed,
    WalLocked,
    WalMisuse,
)
from cellmesh.consensus._walstate import (
    WalStateLost,
    WalWrongNode,
    WipeReport,
    holds_state,
    prepare_directory,
    wipe_replica,
)
from cellmesh.consensus.types import Entry, HardState, JoinState, Snapshot, SnapshotMeta

DEFAULT_SEGMENT_SIZE: Final = 64 * 1024 * 1024



# --------------------------------------------------------------------------
# Values


@attrs.frozen(kw_only=True)
class WalBatch:
    """What one :meth:`WriteAheadLog.save` makes durable, applied in this order.

    ``snapshot``: a snapshot to install (its file is written first). Entries
    at or below its index are compacted; later entries survive iff the log
    holds the snapshot's last entry with the snapshot's term (Raft section 7).
    ``hard_state``: the new term/vote/commit, or ``None`` if unchanged.
    ``entries``: consecutive entries; the first may have any index from
    ``base + 1`` to ``last_index + 1`` -- entries at and after it are replaced
    (the follower's conflicting suffix is overwritten).
    ``join``: a joining node's new :class:`JoinState` (kept in ``STATE``).
    """

    snapshot: Snapshot | None = None
    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    join: JoinState | None = None

    @property
    def empty(self) -> bool:
        """True if saving this batch would change nothing."""
        return (
            self.snapshot is None
            and self.hard_state is None
            and not self.entries
            and self.join is None
        )


@attrs.frozen(kw_only=True)
class TornTail:
    """What recovery cut off: the unacknowledged tail of the last segment."""

    path: Path
    offset: int  #: where the file was truncated (0: the file was removed)
    dropped_bytes: int
    reason: str


@attrs.frozen(kw_only=True)
class Recovered:
    """The durable state found on disk.

    ``entries`` are consecutive, starting right after ``snapshot.meta.index``
    (or at 1 without a snapshot). ``node`` is the owner recorded in ``STATE``
    (``None`` if not known); ``join`` the joining state of a node that joined
    with an empty log (``None`` for any other node).
    """

    hard_state: HardState
    snapshot: Snapshot | None
    entries: tuple[Entry, ...]
    torn_tail: TornTail | None = None
    node: int | None = None
    join: JoinState | None = None


@attrs.frozen(kw_only=True)
class WalStats:
    """Counters since the log was opened."""

    batches: int
    data_syncs: int
    bytes_written: int
    segments: int


@attrs.frozen(kw_only=True)
class _Plan:
    """How a validated batch changes the in-memory view, applied once it is durable.

    ``terms`` replaces the term array (a snapshot moved the base); then, if
    ``keep`` is set, the array is cut to ``keep`` terms and ``new_terms`` appended.
    """

    mark: codec.SnapshotMark | None
    base: SnapshotMeta | None
    terms: array.array[int] | None
    keep: int | None
    new_terms: list[int]


@attrs.frozen(kw_only=True)
class _Segment:
    path: Path
    seq: int
    max_index: int  #: highest entry index written into this segment (0: none)


# --------------------------------------------------------------------------
# The log


@attrs.define(eq=False)
class WriteAheadLog:
    """A durable Raft log in one directory. Create with :meth:`open`.

    Contract: every method is thread-safe; a method that returned has made
    its effect durable; after any :class:`WalFailed` the object is dead.
    """

    _directory: Path
    _segment_size: int
    _syncer: Syncer
    _lock_fd: int
    _segments: list[_Segment]
    _hard_state: HardState
    _base: SnapshotMeta | None
    _terms: array.array[int]  #: terms of entries base+1 .. last
    _state: _state.StateFile
    _fd: int | None = None
    #: (seq, first index, size) of the segment the current save created
    _rolled: tuple[int, int, int] | None = None
    _offset: int = 0
    _failed: WalFailed | None = None
    _closed: bool = False
    _mutex: threading.Lock = attrs.Factory(threading.Lock)
    _batches: int = 0
    _data_syncs: int = 0
    _bytes_written: int = 0

    # ---------------------------------------------------------------- open

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        syncer: Syncer | None = None,
    ) -> tuple[WriteAheadLog, Recovered]:
        """Open (creating if needed) and recover the log in ``directory``.

        Returns the log, positioned to append, and the recovered state.
        Truncates a torn tail (reported in ``Recovered.torn_tail``); raises
        :class:`WalStateLost` when state a crash cannot lose is missing,
        :class:`WalCorrupted` for any other damage, :class:`WalLocked` if the
        directory is already open, :class:`WalFailed` if disk I/O fails.
        """
        if segment_size < 1:
            raise WalMisuse(f"segment_size must be positive, got {segment_size}")
        path = Path(directory)
        sync = syncer if syncer is not None else OsSyncer()
        try:
            _files.make_dir(path, sync)
            lock_fd = _files.lock_directory(path)
        except OSError as exc:
            raise WalFailed(exc) from exc
        try:
            wal, recovered = cls._recover(path, segment_size, sync, lock_fd)
        except BaseException:
            os.close(lock_fd)
            raise
        return wal, recovered

    @classmethod
    def _recover(
        cls, path: Path, segment_size: int, sync: Syncer, lock_fd: int
    ) -> tuple[WriteAheadLog, Recovered]:
        try:
            _files.remove_temporaries(path, sync)
            names = _files.list_segments(path)
            state = _state.read_state(path)
            if state is None:
                if _state.has_log_files(path):
                    raise WalStateLost(
                        path / _state.STATE_NAME,
                        "this file is missing but the directory holds a log; it is created "
                        "with the directory, before any segment",
                    )
                state = DirState()
                _state.StateFile.create(path, state, sync).close()
        except OSError as exc:
            raise WalFailed(exc) from exc
        _state.check_segments(path, state, names)
        replay = codec.Replay()
        segments: list[_Segment] = []
        torn: TornTail | None = None
        for position, (seq, seg_path) in enumerate(names):
            is_last = position == len(names) - 1
            try:
                image = seg_path.read_bytes()
            except OSError as exc:
                raise WalFailed(exc) from exc
            scan = codec.scan_frames(image)
            if not image:
                scan = attrs.evolve(scan, damage="empty segment file")
            if scan.damage is not None and scan.resync is not None:
                # Checked before the size STATE recorded: damage with valid frames
                # after it is corruption, not a file cut short.
                raise WalCorrupted(
                    seg_path,
                    scan.end,
                    f"{scan.damage}, yet a valid frame follows at byte {scan.resync}",
                )
            _state.check_segment_size(seg_path, seq, state, scan.end)
            if scan.damage is not None:
                if not is_last:
                    raise WalCorrupted(seg_path, scan.end, f"{scan.damage} in a sealed segment")
                torn = TornTail(
                    path=seg_path,
                    offset=scan.end,
                    dropped_bytes=len(image) - scan.end,
                    reason=scan.damage,
                )
                if not scan.frames:
                    break
            segments.append(_replay_segment(replay, seg_path, seq, scan.frames))
        last_path = segments[-1].path if segments else path
        try:
            entries = replay.entries()
        except codec.MalformedRecord as exc:
            raise WalCorrupted(last_path, 0, exc.reason) from None
        snapshot = _files.load_snapshot(path, replay.base) if replay.base is not None else None
        base_index = replay.base.index if replay.base is not None else 0
        last_index = entries[-1].index if entries else base_index
        _state.check_recovered(path, state, replay.hard_state, last_index)
        if torn is not None:
            # Only now that everything else validated is the disk modified.
            try:
                _files.cut_tail(torn.path, torn.offset, sync)
            except OSError as exc:
                raise WalFailed(exc) from exc
        wal = cls(
            directory=path,
            segment_size=segment_size,
            syncer=sync,
            lock_fd=lock_fd,
            segments=segments,
            hard_state=replay.hard_state,
            base=replay.base,
            terms=array.array("Q", [entry.term for entry in entries]),
            state=_state.StateFile.open(path, state, sync),
        )
        if segments:
            try:
                wal._fd = os.open(segments[-1].path, os.O_WRONLY | os.O_CLOEXEC)
                wal._offset = os.fstat(wal._fd).st_size
            except OSError as exc:
                wal.close()
                raise WalFailed(exc) from exc
        join = None
        if state.joining:
            join = JoinState(floor=state.join_floor, done=state.join_done)
        recovered = Recovered(
            hard_state=replay.hard_state,
            snapshot=snapshot,
            entries=entries,
            torn_tail=torn,
            node=state.node,
            join=join,
        )
        return wal, recovered

    # ---------------------------------------------------------------- queries

    @property
    def directory(self) -> Path:
        """The directory holding this log."""
        return self._directory

    @property
    def hard_state(self) -> HardState:
        """The last durable hard state."""
        with self._mutex:
            return self._hard_state

    @property
    def last_index(self) -> int:
        """Index of the last durable entry (the snapshot index if none follow it)."""
        with self._mutex:
            return self._last_index()

    def stats(self) -> WalStats:
        """Counters since :meth:`open` (``data_syncs`` counts batch fdatasyncs)."""
        with self._mutex:
            return WalStats(
                batches=self._batches,
                data_syncs=self._data_syncs,
                bytes_written=self._bytes_written,
                segments=len(self._segments),
            )

    def _base_index(self) -> int:
        return 0 if self._base is None else self._base.index

    def _last_index(self) -> int:
        return self._base_index() + len(self._terms)

    def _term_at(self, index: int) -> int | None:
        base = self._base_index()
        if index == base:
            return 0 if self._base is None else self._base.term
        if base < index <= base + len(self._terms):
            return self._terms[index - base - 1]
        return None

    # ---------------------------------------------------------------- writes

    def append(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        """Durably save ``hard_state`` and ``entries`` as one batch; see :meth:`save`."""
        self.save(WalBatch(hard_state=hard_state, entries=tuple(entries)))

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Durably install ``snapshot`` and compact the log; see :meth:`save`.

        The snapshot file is written to a temporary name, fsynced, renamed and
        the directory fsynced; then a marker batch is written; then segments
        wholly covered by the snapshot and older snapshot files are deleted.
        """
        self.save(WalBatch(snapshot=snapshot))

    def save(self, batch: WalBatch) -> None:
        """Make ``batch`` durable: one write and one fdatasync of the log.

        Ordering duty: reveal nothing in ``batch`` (send messages carrying its
        term or vote, acknowledge its entries) until this returns. A batch
        with a snapshot first writes and fsyncs the snapshot file; rolling to
        a new segment adds one directory fsync. An empty batch does nothing.

        Raises :class:`WalMisuse` (nothing written) if the entries are not
        consecutive, start outside ``base + 1 .. last_index + 1``, or lower a
        term, if the batch would exceed one 4 GiB frame, or if the snapshot
        is older than the current one;
        :class:`WalFailed` if I/O fails (the log is then dead).
        """
        with self._mutex:
            self._check_usable()
            if batch.empty:
                return
            plan = self._plan(batch)
            try:
                if batch.snapshot is not None:
                    _files.write_snapshot_file(self._directory, batch.snapshot, self._syncer)
                self._write_batch(batch, plan.mark)
            except OSError as exc:
                raise self._fail(exc) from exc
            self._base = plan.base
            if plan.terms is not None:
                self._terms = plan.terms
            if plan.keep is not None:
                # In place: a plain append must not copy a million-entry array.
                del self._terms[plan.keep :]
                self._terms.extend(plan.new_terms)
            if batch.hard_state is not None:
                self._hard_state = batch.hard_state
            if batch.snapshot is not None:
                try:
                    self._compact(batch.snapshot.meta)
                except OSError as exc:
                    raise self._fail(exc) from exc
            try:
                self._record_state(batch)
            except OSError as exc:
                raise self._fail(exc) from exc

    def _record_state(self, batch: WalBatch) -> None:
        """Rewrite ``STATE`` if the durable batch changed what it records (rarely)."""
        old = self._state.state
        new = old
        rolled, self._rolled = self._rolled, None
        if rolled is not None:
            seq, first, size = rolled
            new = attrs.evolve(new, segment=seq, segment_index=first, segment_size=size)
        hard = batch.hard_state
        if hard is not None and (hard.term, hard.vote) != (old.term, old.vote):
            new = attrs.evolve(new, term=hard.term, vote=hard.vote)
        join = batch.join
        if join is not None and (join.floor, join.done) != (old.join_floor, old.join_done):
            new = attrs.evolve(new, join_floor=join.floor, join_done=join.done)
        if new is not old:
            commit = min(self._hard_state.commit, self._last_index())
            self._state.update(attrs.evolve(new, commit=commit))

    def _plan(self, batch: WalBatch) -> _Plan:
        """Validate ``batch`` without changing anything; say how it changes the log."""
        base = self._base
        terms = self._terms
        plan = _Plan(mark=None, base=base, terms=None, keep=None, new_terms=[])
        if batch.snapshot is not None:
            meta = batch.snapshot.meta
            if meta.index < self._base_index() or meta.term < 1:
                raise WalMisuse(
                    f"snapshot at index {meta.index} term {meta.term} is older than the "
                    f"current base {self._base_index()}"
                )
            keep = self._term_at(meta.index) == meta.term
            terms = terms[meta.index - self._base_index() :] if keep else array.array("Q")
            base = meta
            plan = attrs.evolve(
                plan, mark=codec.SnapshotMark(meta=meta, keep_suffix=keep), base=base, terms=terms
            )
        if batch.entries:
            base_index = 0 if base is None else base.index
            first = batch.entries[0].index
            if not base_index < first <= base_index + len(terms) + 1:
                raise WalMisuse(
                    f"entries start at index {first}; expected {base_index + 1}.."
                    f"{base_index + len(terms) + 1}"
                )
            if first - base_index >= 2:
                previous = terms[first - base_index - 2]
            else:
                previous = 0 if base is None else base.term
            previous = max(previous, 1)
            expected = first
            size = 0
            new_terms: list[int] = []
            append = new_terms.append
            for entry in batch.entries:
                term = entry.term
                if entry.index != expected:
                    raise WalMisuse(f"entry index {entry.index} breaks the run from {first}")
                if term < previous:
                    raise WalMisuse(f"entry {entry.index} has term {term} < {previous}")
                previous = term
                expected += 1
                size += len(entry.data)
                append(term)
            if size + 64 * len(new_terms) > codec.MAX_FRAME_PAYLOAD:
                raise WalMisuse(f"a batch of about {size} bytes exceeds one frame; split it")
            plan = attrs.evolve(plan, keep=first - base_index - 1, new_terms=new_terms)
        return plan

    def _write_batch(self, batch: WalBatch, mark: codec.SnapshotMark | None) -> None:
        records = []
        if mark is not None:
            records.append(codec.encode_snapshot_mark(mark))
        if batch.hard_state is not None:
            records.append(codec.encode_hard_state(batch.hard_state))
        if batch.entries:
            records.append(codec.encode_entries(batch.entries[0].index, batch.entries))
        payload = b"".join(records)
        frame_size = codec.FRAME_HEADER_SIZE + len(payload)
        max_index = batch.entries[-1].index if batch.entries else 0
        if self._fd is None or self._offset + frame_size > self._segment_size:
            self._roll(payload, max_index)
        else:
            data = codec.encode_frame(codec.FRAME_BATCH, payload, self._offset)
            _files.write_all(self._fd, data, self._offset)
            self._syncer.sync_data(self._fd)
            self._data_syncs += 1
            self._offset += len(data)
            self._bytes_written += len(data)
            last = self._segments[-1]
            self._segments[-1] = attrs.evolve(last, max_index=max(last.max_index, max_index))
        self._batches += 1

    def _roll(self, payload: bytes, max_index: int) -> None:
        """Start a new segment holding a header frame and then this batch's frame."""
        seq = self._segments[-1].seq + 1 if self._segments else 0
        header_records = [codec.encode_hard_state(self._hard_state)]
        if self._base is not None:
            header_records.append(
                codec.encode_snapshot_mark(codec.SnapshotMark(meta=self._base, keep_suffix=True))
            )
        header = codec.encode_frame(
            codec.FRAME_SEGMENT_HEADER,
            codec.encode_segment_header(seq, b"".join(header_records)),
            0,
        )
        data = header + codec.encode_frame(codec.FRAME_BATCH, payload, len(header))
        first = self._last_index() + 1
        path = _state.segment_path(self._directory, seq, first)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        try:
            _files.write_all(fd, data, 0)
            self._syncer.sync_data(fd)
            self._data_syncs += 1
            _files.sync_dir(self._directory, self._syncer)
        except BaseException:
            os.close(fd)
            raise
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        self._offset = len(data)
        self._bytes_written += len(data)
        self._segments.append(_Segment(path=path, seq=seq, max_index=max_index))
        self._rolled = (seq, first, len(data))

    def _compact(self, meta: SnapshotMeta) -> None:
        """Delete segments and snapshot files the durable snapshot ``meta`` makes redundant.

        Only a prefix of sealed segments is removed, oldest first, each removal
        made durable before the next so a crash never leaves a hole.
        """
        while len(self._segments) > 1 and self._segments[0].max_index <= meta.index:
            os.unlink(self._segments[0].path)
            _files.sync_dir(self._directory, self._syncer)
            del self._segments[0]
        keep = _files.snapshot_name(meta)
        removed = False
        for name in os.listdir(self._directory):
            if SNAPSHOT_RE.fullmatch(name) and name != keep:
                os.unlink(self._directory / name)
                removed = True
        if removed:
            _files.sync_dir(self._directory, self._syncer)

    # ---------------------------------------------------------------- lifecycle

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise WalFailed(self._failed.os_error) from self._failed.os_error
        if self._closed:
            raise WalMisuse("the write-ahead log is closed")

    def _fail(self, exc: OSError) -> WalFailed:
        self._failed = WalFailed(exc)
        return self._failed

    def close(self) -> None:
        """Release the file descriptors and the directory lock. Idempotent."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None
            self._state.close()
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)

    def __enter__(self) -> WriteAheadLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _replay_segment(
    replay: codec.Replay, path: Path, seq: int, frames: Sequence[codec.Frame]
) -> _Segment:
    """Apply one segment's frames (the clean prefix) to ``replay``."""
    max_index = 0
    for number, frame in enumerate(frames):
        expected = codec.FRAME_SEGMENT_HEADER if number == 0 else codec.FRAME_BATCH
        if frame.kind != expected:
            raise WalCorrupted(path, frame.offset, f"unexpected frame kind {frame.kind}")
        try:
            if number == 0:
                header_seq, records = codec.decode_segment_header(frame.payload)
                if header_seq != seq:
                    raise WalCorrupted(path, frame.offset, f"header says segment {header_seq}")
            else:
                records = codec.decode_records(frame.payload)
            for record in records:
                max_index = max(max_index, replay.apply(record))
        except codec.MalformedRecord as exc:
            raise WalCorrupted(
                path, frame.offset + codec.FRAME_HEADER_SIZE + exc.offset, exc.reason
            ) from None
    return _Segment(path=path, seq=seq, max_index=max_index)


def iter_segment_paths(directory: str | os.PathLike[str]) -> Iterator[Path]:
    """The segment files of a (closed) log directory in replay order, for tools and tests."""
    for _, path in _files.list_segments(Path(directory)):
        yield path


__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "OsSyncer",
    "Recovered",
    "Syncer",
    "TornTail",
    "WalBatch",
    "WalCorrupted",
    "WalError",
    "WalFailed",
    "WalLocked",
    "WalMisuse",
    "WriteAheadLog",
    "WalStateLost",
    "WalStats",
    "WalWrongNode",
    "WipeReport",
    "holds_state",
    "iter_segment_paths",
    "prepare_directory",
    "wipe_replica",
]

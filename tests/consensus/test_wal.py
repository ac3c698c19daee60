"""Write-ahead log behaviour: round trips, overwrite, snapshots, group commit, failure."""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import pytest

from cellmesh.consensus.types import Entry, EntryKind, HardState, Snapshot, SnapshotMeta
from cellmesh.consensus.wal import (
    WalBatch,
    WalFailed,
    WalLocked,
    WalMisuse,
    WriteAheadLog,
    iter_segment_paths,
)


@attrs.define
class CountingSyncer:
    """Counts syncs by kind; ``fail_data_at`` makes the n-th data sync raise EIO."""

    data: int = 0
    files: int = 0
    dirs: int = 0
    fail_data_at: int | None = None

    def sync_data(self, fd: int) -> None:
        self.data += 1
        if self.fail_data_at is not None and self.data >= self.fail_data_at:
            raise OSError(5, "injected EIO")
        os.fdatasync(fd)

    def sync_file(self, fd: int) -> None:
        self.files += 1
        os.fsync(fd)

    def sync_dir(self, fd: int) -> None:
        self.dirs += 1
        os.fsync(fd)


def entries(first: int, last: int, term: int, tag: bytes = b"") -> list[Entry]:
    return [Entry(index=i, term=term, data=tag + str(i).encode()) for i in range(first, last + 1)]


def test_wal_empty_directory_recovers_nothing(tmp_path: Path) -> None:
    wal, rec = WriteAheadLog.open(tmp_path / "wal")
    with wal:
        assert rec.hard_state == HardState()
        assert rec.entries == ()
        assert rec.snapshot is None
        assert rec.torn_tail is None
        assert wal.last_index == 0


def test_wal_round_trip_state_and_entries(tmp_path: Path) -> None:
    batch = [
        Entry(index=1, term=1, kind=EntryKind.NOOP),
        Entry(index=2, term=1, data=b"\x00\xff" * 100),
        Entry(index=3, term=2, kind=EntryKind.CONFIG, data=b"v=1,2;l="),
    ]
    with WriteAheadLog.open(tmp_path)[0] as wal:
        wal.append(HardState(term=2, vote=7, commit=1), batch)
        wal.append(HardState(term=2, vote=7, commit=3), [])
    wal, rec = WriteAheadLog.open(tmp_path)
    with wal:
        assert rec.hard_state == HardState(term=2, vote=7, commit=3)
        assert rec.entries == tuple(batch)
        assert wal.last_index == 3
        assert wal.hard_state == rec.hard_state


def test_wal_overwrite_conflicting_suffix_replays_as_truncation(tmp_path: Path) -> None:
    """Raft section 5.3: a follower's conflicting suffix is replaced."""
    with WriteAheadLog.open(tmp_path)[0] as wal:
        wal.append(HardState(term=1), entries(1, 10, 1))
        wal.append(HardState(term=3), entries(6, 7, 3, b"new"))
        assert wal.last_index == 7
    wal, rec = WriteAheadLog.open(tmp_path)
    with wal:
        assert rec.entries == tuple(entries(1, 5, 1) + entries(6, 7, 3, b"new"))
        wal.append(None, entries(8, 8, 3))
    assert WriteAheadLog.open(tmp_path)[1].entries[-1] == Entry(index=8, term=3, data=b"8")


def test_wal_rolls_segments_and_replays_across_them(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path, segment_size=256)[0] as wal:
        for i in range(1, 41):
            wal.append(HardState(term=1, commit=i - 1), entries(i, i, 1))
        assert wal.stats().segments > 5
        wal.append(None, entries(3, 4, 2, b"x"))
    wal, rec = WriteAheadLog.open(tmp_path, segment_size=256)
    with wal:
        assert rec.entries == tuple(entries(1, 2, 1) + entries(3, 4, 2, b"x"))
        assert rec.hard_state == HardState(term=1, commit=39)


def test_wal_one_write_and_one_fdatasync_per_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit: one pwrite and one fdatasync per batch. The first batch costs one
    more of each: it changes the term and creates the first segment, which the STATE
    file records."""
    syncer = CountingSyncer()
    writes: list[int] = []
    real_pwrite = os.pwrite

    def counting_pwrite(fd: int, data: bytes, offset: int) -> int:
        writes.append(len(data))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", counting_pwrite)
    with WriteAheadLog.open(tmp_path, syncer=syncer)[0] as wal:
        assert (syncer.files, syncer.dirs) == (1, 1)  # STATE, created with the directory
        writes.clear()
        for i in range(1, 51):
            wal.append(HardState(term=1, commit=i), entries(10 * i - 9, 10 * i, 1))
            assert syncer.data == i + 1
            assert len(writes) == i + 1
        assert syncer.files == 1
        assert syncer.dirs == 2  # STATE, then the first segment
        assert wal.stats().data_syncs == 50
        assert wal.stats().batches == 50
        wal.save(WalBatch())  # empty: no I/O at all
        assert syncer.data == 51


def test_wal_roll_costs_one_dir_sync_and_one_state_sync(tmp_path: Path) -> None:
    """A new segment costs a directory fsync and one STATE record (one fdatasync)."""
    syncer = CountingSyncer()
    with WriteAheadLog.open(tmp_path, segment_size=200, syncer=syncer)[0] as wal:
        for i in range(1, 21):
            wal.append(HardState(term=1), entries(i, i, 1, b"y" * 40))
        segments = wal.stats().segments
        assert syncer.data == 20 + segments
        assert syncer.dirs == segments + 1  # + creating STATE


def test_wal_fsync_failure_stops_the_log_for_good(tmp_path: Path) -> None:
    """fsyncgate: a failed fsync is never retried; every later call fails."""
    syncer = CountingSyncer(fail_data_at=4)  # 1, 2: the first batch and its STATE
    wal, _ = WriteAheadLog.open(tmp_path, syncer=syncer)
    wal.append(HardState(term=1), entries(1, 1, 1))
    wal.append(None, entries(2, 2, 1))
    with pytest.raises(WalFailed) as first:
        wal.append(None, entries(3, 3, 1))
    assert isinstance(first.value.os_error, OSError)
    syncer.fail_data_at = None
    with pytest.raises(WalFailed):
        wal.append(None, entries(3, 3, 1))
    with pytest.raises(WalFailed):
        wal.save(WalBatch(hard_state=HardState(term=2)))
    assert syncer.data == 4  # the failed sync was not retried
    wal.close()
    rec = WriteAheadLog.open(tmp_path)[1]
    assert [e.index for e in rec.entries][:2] == [1, 2]


def test_wal_rejects_misuse_without_writing(tmp_path: Path) -> None:
    syncer = CountingSyncer()
    with WriteAheadLog.open(tmp_path, syncer=syncer)[0] as wal:
        wal.append(HardState(term=2), entries(1, 3, 2))
        with pytest.raises(WalMisuse):
            wal.append(None, entries(5, 5, 2))  # gap
        with pytest.raises(WalMisuse):
            wal.append(None, [Entry(index=4, term=2), Entry(index=6, term=2)])
        with pytest.raises(WalMisuse):
            wal.append(None, entries(4, 4, 1))  # term goes down
        with pytest.raises(WalMisuse):
            wal.append(None, [Entry(index=4, term=3), Entry(index=5, term=2)])
        assert syncer.data == 2  # the one batch and its STATE record
        assert wal.last_index == 3
    with pytest.raises(WalMisuse):
        wal.append(None, entries(4, 4, 2))


def test_wal_directory_is_locked_while_open(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    with pytest.raises(WalLocked):
        WriteAheadLog.open(tmp_path)
    wal.close()
    WriteAheadLog.open(tmp_path)[0].close()


def snap(index: int, term: int, data: bytes = b"state") -> Snapshot:
    return Snapshot(
        meta=SnapshotMeta(index=index, term=term, voters=frozenset({1, 2, 3})), data=data
    )


def test_wal_local_snapshot_keeps_suffix_and_compacts(tmp_path: Path) -> None:
    """Raft section 7: entries after a matching snapshot entry are retained."""
    with WriteAheadLog.open(tmp_path, segment_size=300)[0] as wal:
        for i in range(1, 31):
            wal.append(HardState(term=1, commit=i), entries(i, i, 1))
        before = wal.stats().segments
        wal.save(WalBatch(snapshot=snap(25, 1)))
        assert wal.stats().segments < before
        assert wal.last_index == 30
    names = sorted(os.listdir(tmp_path))
    assert [n for n in names if n.startswith("snap-")] == [
        "snap-0000000000000019-0000000000000001.snap"
    ]
    wal, rec = WriteAheadLog.open(tmp_path, segment_size=300)
    with wal:
        assert rec.snapshot == snap(25, 1)
        assert rec.entries == tuple(entries(26, 30, 1))
        assert rec.hard_state == HardState(term=1, commit=30)
        wal.append(None, entries(31, 31, 1))
        wal.save_snapshot(snap(31, 1, b"later"))
    wal, rec = WriteAheadLog.open(tmp_path)
    with wal:
        assert rec.snapshot == snap(31, 1, b"later")
        assert rec.entries == ()
        assert len([n for n in os.listdir(tmp_path) if n.startswith("snap-")]) == 1


def test_wal_installed_snapshot_discards_a_mismatched_log(tmp_path: Path) -> None:
    """Raft section 7: if the snapshot's last entry is not in the log, discard the log."""
    with WriteAheadLog.open(tmp_path)[0] as wal:
        wal.append(HardState(term=1), entries(1, 5, 1))
        wal.save(
            WalBatch(
                snapshot=snap(8, 3), hard_state=HardState(term=3, commit=8),
                entries=tuple(entries(9, 10, 3)),
            )
        )
        assert wal.last_index == 10
        with pytest.raises(WalMisuse):
            wal.save(WalBatch(snapshot=snap(7, 3)))
        with pytest.raises(WalMisuse):
            wal.append(None, entries(8, 8, 3))  # at or below the snapshot
    rec = WriteAheadLog.open(tmp_path)[1]
    assert rec.snapshot == snap(8, 3)
    assert rec.entries == tuple(entries(9, 10, 3))
    assert rec.hard_state == HardState(term=3, commit=8)


def test_wal_snapshot_with_same_index_other_term_discards(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path)[0] as wal:
        wal.append(HardState(term=2), entries(1, 2, 1) + entries(3, 6, 2))
        wal.save(WalBatch(snapshot=snap(4, 3)))
        assert wal.last_index == 4
    assert WriteAheadLog.open(tmp_path)[1].entries == ()


def test_wal_segments_listed_in_replay_order(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path, segment_size=100)[0] as wal:
        for i in range(1, 12):
            wal.append(None, entries(i, i, 1))
    paths = list(iter_segment_paths(tmp_path))
    assert len(paths) == 11
    assert paths == sorted(paths)


def test_wal_write_failure_stops_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed write (ENOSPC, EIO) leaves the file in an unknown state: stop for good."""
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.append(HardState(term=1), entries(1, 1, 1))

    def failing_pwrite(fd: int, data: bytes, offset: int) -> int:
        raise OSError(28, "injected ENOSPC")

    monkeypatch.setattr(os, "pwrite", failing_pwrite)
    with pytest.raises(WalFailed):
        wal.append(None, entries(2, 2, 1))
    monkeypatch.undo()
    with pytest.raises(WalFailed):
        wal.append(None, entries(2, 2, 1))
    wal.close()
    assert WriteAheadLog.open(tmp_path)[1].entries == tuple(entries(1, 1, 1))


def test_wal_snapshot_sync_failure_stops_the_log(tmp_path: Path) -> None:
    @attrs.define
    class FailingFileSync(CountingSyncer):
        armed: bool = False

        def sync_file(self, fd: int) -> None:
            if self.armed:
                raise OSError(5, "injected EIO")
            super().sync_file(fd)

    syncer = FailingFileSync()
    wal, _ = WriteAheadLog.open(tmp_path, syncer=syncer)
    syncer.armed = True
    wal.append(HardState(term=1), entries(1, 3, 1))
    with pytest.raises(WalFailed):
        wal.save(WalBatch(snapshot=snap(2, 1)))
    with pytest.raises(WalFailed):
        wal.append(None, entries(4, 4, 1))
    wal.close()
    rec = WriteAheadLog.open(tmp_path)[1]
    assert rec.snapshot is None
    assert rec.entries == tuple(entries(1, 3, 1))


def test_wal_saves_from_many_threads_are_serialized(tmp_path: Path) -> None:
    """The driver calls save from worker threads; the log's lock keeps batches whole."""
    import threading

    wal, _ = WriteAheadLog.open(tmp_path, segment_size=4096)
    errors: list[BaseException] = []

    def writer(node: int) -> None:
        try:
            for term in range(1, 30):
                wal.save(WalBatch(hard_state=HardState(term=term, vote=node)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert wal.stats().batches == 4 * 29
    final = wal.hard_state
    wal.close()
    assert WriteAheadLog.open(tmp_path)[1].hard_state == final


def test_wal_codec_is_pure() -> None:
    """House rule 1: the byte format and replay rules import no I/O, clock or threads."""
    import ast

    from cellmesh.consensus import _walcodec

    source = Path(_walcodec.__file__).read_text()
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    assert not roots & {"os", "io", "trio", "socket", "time", "random", "threading", "pathlib"}

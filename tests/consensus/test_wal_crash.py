"""Crash recovery of the write-ahead log: torn tails are cut, damage elsewhere is refused.

Invariant under test: after a crash at any byte of the last batch, recovery
yields exactly the batches whose ``save`` returned; damage anywhere else is
reported as :class:`WalCorrupted` naming the file and offset.

A simulated crash puts back the ``STATE`` file as it was before the torn
batch: ``STATE`` is rewritten only after a batch is durable, so a crash in
the middle of one leaves the previous record.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import attrs
import pytest

from cellmesh.consensus._walcodec import scan_frames
from cellmesh.consensus.types import Entry, HardState, Snapshot, SnapshotMeta
from cellmesh.consensus.wal import (
    Recovered,
    WalBatch,
    WalCorrupted,
    WriteAheadLog,
    iter_segment_paths,
)


@attrs.frozen
class Model:
    """Expected recovery outcome after some number of acknowledged batches."""

    hard_state: HardState
    entries: tuple[Entry, ...]
    snapshot: Snapshot | None


def outcome(rec: Recovered) -> Model:
    return Model(hard_state=rec.hard_state, entries=rec.entries, snapshot=rec.snapshot)


STATES: dict[Path, list[bytes]] = {}


def build(directory: Path, batches: list[WalBatch], segment_size: int) -> list[Model]:
    """Save ``batches``; return the model after each prefix (index k: k batches saved).

    The ``STATE`` file after each prefix is kept in ``STATES[directory]``.
    """
    models = []
    states = STATES.setdefault(directory, [])
    with WriteAheadLog.open(directory, segment_size=segment_size)[0] as wal:
        models.append(outcome(WriteAheadLog_state(directory, wal)))
        states.append((directory / "STATE").read_bytes())
        for batch in batches:
            wal.save(batch)
            models.append(outcome(WriteAheadLog_state(directory, wal)))
            states.append((directory / "STATE").read_bytes())
    return models


def state_before_last(directory: Path) -> bytes:
    """The ``STATE`` file as it was before the last batch (what a crash in it leaves)."""
    return STATES[directory][-2]


def WriteAheadLog_state(directory: Path, wal: WriteAheadLog) -> Recovered:
    """Recover a copy of the live directory (the live one stays locked)."""
    copy = directory.with_name(directory.name + "-copy")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(directory, copy)
    (copy / "LOCK").unlink()
    copy_wal, rec = WriteAheadLog.open(copy)
    copy_wal.close()
    shutil.rmtree(copy)
    return rec


def batches_for_test() -> list[WalBatch]:
    out = []
    for i in range(1, 6):
        out.append(
            WalBatch(
                hard_state=HardState(term=i, vote=i % 3, commit=2 * i - 2),
                entries=tuple(
                    Entry(index=j, term=i, data=bytes([j]) * 7) for j in (2 * i - 1, 2 * i)
                ),
            )
        )
    # the last batch overwrites a suffix and moves the vote
    out.append(
        WalBatch(
            hard_state=HardState(term=9, vote=2, commit=6),
            entries=(Entry(index=7, term=9, data=b"seven"), Entry(index=8, term=9)),
        )
    )
    return out


def recover_image(
    directory: Path, path: Path, image: bytes, state: bytes | None = None
) -> Recovered:
    """Recover after writing ``image`` to ``path`` (and ``state`` to ``STATE``)."""
    path.write_bytes(image)
    if state is not None:
        (directory / "STATE").write_bytes(state)
    wal, rec = WriteAheadLog.open(directory)
    wal.close()
    return rec


def test_wal_cut_last_batch_at_every_byte_recovers_acknowledged_prefix(tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    batches = batches_for_test()
    models = build(directory, batches[:-1], 1 << 20)
    (segment,) = iter_segment_paths(directory)
    start = segment.stat().st_size
    models.extend(build(directory, batches[-1:], 1 << 20)[1:])
    full = segment.read_bytes()
    assert models[-1].entries[-1] == Entry(index=8, term=9)
    before = state_before_last(directory)
    for cut in range(start, len(full)):
        rec = recover_image(directory, segment, full[:cut], before)
        assert outcome(rec) == models[-2], cut
        assert (rec.torn_tail is None) == (cut == start)
        assert segment.stat().st_size == start
    assert outcome(recover_image(directory, segment, full)) == models[-1]


def test_wal_cut_first_batch_of_a_new_segment_at_every_byte(tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    batches = batches_for_test()
    size = 150  # each batch rolls to a new segment
    models = build(directory, batches[:-1], size)
    models.extend(build(directory, batches[-1:], size)[1:])
    segments = list(iter_segment_paths(directory))
    assert len(segments) == len(batches)
    last = segments[-1]
    full = last.read_bytes()
    header_end = scan_frames(full).frames[0].end
    before = state_before_last(directory)
    for cut in range(len(full)):
        rec = recover_image(directory, last, full[:cut], before)
        assert outcome(rec) == models[-2], cut
        assert (rec.torn_tail is None) == (cut == header_end)
        if cut < header_end:
            assert not last.exists()  # nothing acknowledged lived there
        else:
            assert last.stat().st_size == header_end
    assert outcome(recover_image(directory, last, full)) == models[-1]
    with WriteAheadLog.open(directory, segment_size=size)[0] as wal:
        wal.save(WalBatch(hard_state=HardState(term=10)))
    assert WriteAheadLog.open(directory)[1].hard_state == HardState(term=10)


def test_wal_torn_tail_with_zero_fill_is_cut(tmp_path: Path) -> None:
    """Some file systems expose zeroed blocks past the last durable write."""
    directory = tmp_path / "wal"
    batches = batches_for_test()
    models = build(directory, batches, 1 << 20)
    (segment,) = iter_segment_paths(directory)
    full = segment.read_bytes()
    start = scan_frames(full).frames[-1].offset
    cuts = [cut for cut in range(start, len(full)) if any(full[cut:])]
    assert len(cuts) > 10
    before = state_before_last(directory)
    for cut in cuts:
        rec = recover_image(directory, segment, full[:cut] + bytes(4096), before)
        assert outcome(rec) == models[-2]
    rec = recover_image(directory, segment, full + bytes(4096))
    assert outcome(rec) == models[-1]
    assert rec.torn_tail is not None
    assert rec.torn_tail.offset == len(full)


def test_wal_appends_after_cutting_a_torn_tail(tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    build(directory, batches_for_test(), 1 << 20)
    (segment,) = iter_segment_paths(directory)
    segment.write_bytes(segment.read_bytes()[:-3])
    (directory / "STATE").write_bytes(state_before_last(directory))
    wal, rec = WriteAheadLog.open(directory)
    with wal:
        assert rec.entries[-1].index == 10
        wal.append(None, [Entry(index=11, term=5, data=b"after")])
    rec = WriteAheadLog.open(directory)[1]
    assert rec.entries[-1] == Entry(index=11, term=5, data=b"after")
    assert rec.torn_tail is None


def flip(path: Path, offset: int) -> None:
    image = bytearray(path.read_bytes())
    image[offset] ^= 0x10
    path.write_bytes(bytes(image))


def test_wal_bit_flip_in_a_sealed_segment_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    build(directory, batches_for_test(), 150)
    first, *_ = iter_segment_paths(directory)
    size = first.stat().st_size
    for offset in range(0, size, 7):
        pristine = first.read_bytes()
        flip(first, offset)
        with pytest.raises(WalCorrupted) as info:
            WriteAheadLog.open(directory)
        assert info.value.path == first
        assert 0 <= info.value.offset < size
        first.write_bytes(pristine)


def test_wal_bit_flip_before_the_last_frame_of_the_last_segment_is_refused(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "wal"
    build(directory, batches_for_test(), 1 << 20)
    (segment,) = iter_segment_paths(directory)
    pristine = segment.read_bytes()
    last_frame_start = len(build_prefix_size(tmp_path))
    for offset in range(0, last_frame_start, 5):
        flip(segment, offset)
        with pytest.raises(WalCorrupted) as info:
            WriteAheadLog.open(directory)
        assert info.value.path == segment
        assert info.value.offset <= offset
        segment.write_bytes(pristine)


def build_prefix_size(tmp_path: Path) -> bytes:
    """The segment image holding every batch but the last (same bytes as the full run)."""
    directory = tmp_path / "prefix"
    build(directory, batches_for_test()[:-1], 1 << 20)
    (segment,) = iter_segment_paths(directory)
    return segment.read_bytes()


def test_wal_bit_flip_in_the_last_frame_is_a_torn_tail(tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    models = build(directory, batches_for_test(), 1 << 20)
    (segment,) = iter_segment_paths(directory)
    start = len(build_prefix_size(tmp_path))
    flip(segment, start + 40)
    (directory / "STATE").write_bytes(state_before_last(directory))
    wal, rec = WriteAheadLog.open(directory)
    wal.close()
    assert outcome(rec) == models[-2]
    assert rec.torn_tail is not None
    assert rec.torn_tail.offset == start


def test_wal_missing_middle_segment_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    build(directory, batches_for_test(), 150)
    segments = list(iter_segment_paths(directory))
    segments[2].unlink()
    with pytest.raises(WalCorrupted) as info:
        WriteAheadLog.open(directory)
    assert info.value.path == segments[3]


def test_wal_empty_sealed_segment_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    build(directory, batches_for_test(), 150)
    segments = list(iter_segment_paths(directory))
    segments[1].write_bytes(b"")
    with pytest.raises(WalCorrupted):
        WriteAheadLog.open(directory)


def test_wal_missing_or_corrupt_snapshot_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    meta = SnapshotMeta(index=4, term=2, voters=frozenset({1}))
    build(
        directory,
        [*batches_for_test()[:3], WalBatch(snapshot=Snapshot(meta=meta, data=b"s" * 50))],
        1 << 20,
    )
    (snap_path,) = directory.glob("snap-*.snap")
    pristine = snap_path.read_bytes()
    flip(snap_path, 30)
    with pytest.raises(WalCorrupted) as info:
        WriteAheadLog.open(directory)
    assert info.value.path == snap_path
    snap_path.unlink()
    with pytest.raises(WalCorrupted):
        WriteAheadLog.open(directory)
    snap_path.write_bytes(pristine)
    rec = WriteAheadLog.open(directory)[1]
    assert rec.snapshot == Snapshot(meta=meta, data=b"s" * 50)


def test_wal_leftover_snapshot_temp_file_is_removed(tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    build(directory, batches_for_test()[:1], 1 << 20)
    temp = directory / "snap-0000000000000009-0000000000000001.snap.tmp"
    temp.write_bytes(b"half a snapshot")
    WriteAheadLog.open(directory)[0].close()
    assert not temp.exists()
    segments = [p.name for p in iter_segment_paths(directory)]
    assert sorted(os.listdir(directory)) == ["LOCK", "STATE", *segments]


def test_wal_refused_log_is_left_untouched(tmp_path: Path) -> None:
    """A torn tail is not cut when something else makes recovery refuse the log."""
    directory = tmp_path / "wal"
    meta = SnapshotMeta(index=4, term=2, voters=frozenset({1}))
    build(
        directory,
        [*batches_for_test()[:3], WalBatch(snapshot=Snapshot(meta=meta, data=b"s")),
         batches_for_test()[3]],
        1 << 20,
    )
    (segment,) = iter_segment_paths(directory)
    torn = segment.read_bytes()[:-5]
    segment.write_bytes(torn)
    (snap_path,) = directory.glob("snap-*.snap")
    snap_path.unlink()
    with pytest.raises(WalCorrupted):
        WriteAheadLog.open(directory)
    assert segment.read_bytes() == torn


def test_wal_crash_during_snapshot_install_keeps_the_previous_state(tmp_path: Path) -> None:
    """A crash anywhere in the marker batch of ``save_snapshot`` (after the snapshot file
    is in place) recovers the state before it; the unreferenced snapshot file is ignored
    and removed by the next compaction."""
    directory = tmp_path / "wal"
    batches = batches_for_test()[:4]
    meta = SnapshotMeta(index=6, term=3, voters=frozenset({1, 2}))
    models = build(directory, batches, 1 << 20)
    (segment,) = iter_segment_paths(directory)
    start = segment.stat().st_size
    install = WalBatch(snapshot=Snapshot(meta=meta, data=b"S"))
    models.extend(build(directory, [install], 1 << 20)[1:])
    full = segment.read_bytes()
    before = state_before_last(directory)
    for cut in range(start, len(full)):
        rec = recover_image(directory, segment, full[:cut], before)
        assert outcome(rec) == models[-2], cut
        assert rec.snapshot is None
    rec = recover_image(directory, segment, full)
    assert rec.snapshot == Snapshot(meta=meta, data=b"S")
    assert [e.index for e in rec.entries] == [7, 8]


def test_wal_damage_in_the_first_batch_of_a_newer_segment_is_corruption_not_truncation(
    tmp_path: Path,
) -> None:
    """A segment made by a rollover starts with the batch that made it, and STATE records
    that size. Damage inside that batch, with valid frames after it, is WalCorrupted at
    the damage: the file is whole, it was not cut short (it used to be reported as
    WalStateLost, 'the file was truncated')."""
    directory = tmp_path / "wal"
    batches = [
        WalBatch(
            hard_state=HardState(term=1, vote=1, commit=3 * b),
            entries=tuple(Entry(index=i, term=1, data=bytes([i]) * 40)
                          for i in range(3 * b + 1, 3 * b + 4)),
        )
        for b in range(12)
    ]
    build(directory, batches, 600)
    last = list(iter_segment_paths(directory))[-1]
    pristine = last.read_bytes()
    header, first, _later = scan_frames(pristine).frames  # a batch follows the first one
    for offset in range(header.offset, first.end, 3):
        flip(last, offset)
        with pytest.raises(WalCorrupted) as info:
            WriteAheadLog.open(directory)
        assert info.value.path == last
        assert info.value.offset <= offset
        assert "valid frame follows" in str(info.value)
        last.write_bytes(pristine)


"""Property tests of the write-ahead log.

Invariants:

* garbage in, only :class:`WalCorrupted` out: any bytes in a segment or
  snapshot file either recover or raise ``WalCorrupted`` -- never another
  exception;
* damage never costs an acknowledged batch silently: if recovery succeeds
  it returns the state after some batch count ``k`` that includes every
  batch lying wholly before the damaged bytes;
* a random workload of appends, overwrites, hard states, snapshots and
  reopenings recovers exactly what a simple in-memory model of Raft's log
  (sections 5.3 and 7) predicts.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellmesh.consensus._walcodec import DirState, encode_state, scan_frames
from cellmesh.consensus.types import Entry, EntryKind, HardState, Snapshot, SnapshotMeta
from cellmesh.consensus.wal import (
    Recovered,
    WalBatch,
    WalCorrupted,
    WriteAheadLog,
    iter_segment_paths,
)

payloads = st.binary(max_size=30)


class NoSync:
    """Durability is tested elsewhere; these properties only need the bytes."""

    def sync_data(self, fd: int) -> None:
        pass

    def sync_file(self, fd: int) -> None:
        pass

    def sync_dir(self, fd: int) -> None:
        pass


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def try_open(directory: Path) -> Recovered | None:
    """Open and close; ``None`` if the log is refused as corrupt."""
    try:
        wal, rec = WriteAheadLog.open(directory, syncer=NoSync())
    except WalCorrupted:
        return None
    wal.close()
    return rec


@FUZZ
@given(
    garbage=st.lists(st.binary(max_size=300), min_size=1, max_size=3),
    snapshot_garbage=st.none() | st.binary(max_size=200),
    state=st.none() | st.just(b"fresh") | st.binary(max_size=300),
)
def test_wal_garbage_files_raise_only_wal_corrupted(
    garbage: list[bytes], snapshot_garbage: bytes | None, state: bytes | None
) -> None:
    """Garbage segments, snapshot and STATE files: only WalCorrupted (or a recovery)."""
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        for seq, blob in enumerate(garbage):
            (directory / f"wal-{seq:016x}-{1:016x}.log").write_bytes(blob)
        if snapshot_garbage is not None:
            (directory / f"snap-{1:016x}-{1:016x}.snap").write_bytes(snapshot_garbage)
        if state == b"fresh":  # a valid STATE, so the segments themselves are parsed
            state = encode_state(DirState()) * 2
        if state is not None:
            (directory / "STATE").write_bytes(state)
        try_open(directory)


def sample_batches() -> list[WalBatch]:
    out = []
    index = 1
    for term in range(1, 9):
        count = term % 3 + 1
        out.append(
            WalBatch(
                hard_state=HardState(term=term, vote=term % 2, commit=index - 1),
                entries=tuple(
                    Entry(index=i, term=term, data=bytes([i % 256]) * (i % 11))
                    for i in range(index, index + count)
                ),
            )
        )
        index += count
    out.insert(
        4,
        WalBatch(
            snapshot=Snapshot(meta=SnapshotMeta(index=3, term=2, voters=frozenset({1})), data=b"s")
        ),
    )
    return out


def project(rec: Recovered) -> tuple[object, ...]:
    return (rec.hard_state, rec.entries, rec.snapshot)


@FUZZ
@given(data=st.data())
def test_wal_damage_never_silently_drops_an_acknowledged_batch(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name) / "wal"
        states = []
        ends = []
        with WriteAheadLog.open(directory, syncer=NoSync())[0] as wal:
            for batch in sample_batches():
                wal.save(batch)
        # Recompute the expected state after each prefix of batches.
        for k in range(len(sample_batches()) + 1):
            scratch = Path(name) / f"k{k}"
            with WriteAheadLog.open(scratch, syncer=NoSync())[0] as wal:
                for batch in sample_batches()[:k]:
                    wal.save(batch)
            states.append(project(WriteAheadLog.open(scratch)[1]))
            shutil.rmtree(scratch)
        (segment,) = iter_segment_paths(directory)
        image = segment.read_bytes()
        ends = [frame.end for frame in scan_frames(image).frames]  # header, then batches
        start = data.draw(st.integers(0, len(image) - 1), label="start")
        kind = data.draw(st.sampled_from(["overwrite", "truncate+garbage", "flip"]), label="kind")
        if kind == "overwrite":
            junk = data.draw(st.binary(min_size=1, max_size=40), label="junk")
            damaged = image[:start] + junk + image[start + len(junk) :]
        elif kind == "flip":
            bit = data.draw(st.integers(0, 7), label="bit")
            damaged = image[:start] + bytes([image[start] ^ (1 << bit)]) + image[start + 1 :]
        else:
            junk = data.draw(st.binary(max_size=60), label="junk")
            damaged = image[:start] + junk
        segment.write_bytes(damaged)
        rec = try_open(directory)
        if rec is None:
            return
        intact = sum(1 for end in ends[1:] if end <= start)
        found = states.index(project(rec))
        assert found >= intact


@attrs.define
class Model:
    """Raft's log as the paper describes it, kept naively in memory."""

    hard_state: HardState = attrs.Factory(HardState)
    base: SnapshotMeta | None = None
    entries: list[Entry] = attrs.Factory(list)  # after base
    snapshot: Snapshot | None = None

    @property
    def base_index(self) -> int:
        return 0 if self.base is None else self.base.index

    @property
    def last(self) -> int:
        return self.base_index + len(self.entries)

    def term_at(self, index: int) -> int:
        if index == self.base_index:
            return 0 if self.base is None else self.base.term
        return self.entries[index - self.base_index - 1].term

    def apply(self, batch: WalBatch) -> None:
        if batch.snapshot is not None:
            meta = batch.snapshot.meta
            keep = [e for e in self.entries if e.index > meta.index]
            matches = self.base_index <= meta.index <= self.last and (
                self.term_at(meta.index) == meta.term
            )
            self.entries = keep if matches else []
            self.base = meta
            self.snapshot = batch.snapshot
        if batch.hard_state is not None:
            self.hard_state = batch.hard_state
        if batch.entries:
            first = batch.entries[0].index
            self.entries = self.entries[: first - self.base_index - 1] + list(batch.entries)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), segment_size=st.sampled_from([120, 400, 1 << 20]))
def test_wal_random_workload_matches_model(data: st.DataObject, segment_size: int) -> None:
    model = Model()
    term = 1
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        wal, _ = WriteAheadLog.open(directory, segment_size=segment_size, syncer=NoSync())
        try:
            for _ in range(data.draw(st.integers(1, 25), label="steps")):
                op = data.draw(st.sampled_from(["append", "append", "state", "snap", "reopen"]))
                if op == "reopen":
                    wal.close()
                    wal, rec = WriteAheadLog.open(
                        directory, segment_size=segment_size, syncer=NoSync()
                    )
                    assert rec.hard_state == model.hard_state
                    assert rec.snapshot == model.snapshot
                    assert list(rec.entries) == model.entries
                    continue
                if op == "snap":
                    index = data.draw(st.integers(model.base_index, model.last + 3))
                    same_term = data.draw(st.booleans())
                    if index == 0:
                        continue
                    matching = same_term and index <= model.last
                    snap_term = model.term_at(index) if matching else term
                    if snap_term < 1:
                        continue
                    meta = SnapshotMeta(index=index, term=snap_term, voters=frozenset({1, 2}))
                    batch = WalBatch(snapshot=Snapshot(meta=meta, data=data.draw(st.binary())))
                else:
                    if data.draw(st.booleans()):
                        term += 1
                    hard = HardState(term=term, vote=data.draw(st.none() | st.integers(0, 5)))
                    ents: tuple[Entry, ...] = ()
                    if op == "append":
                        kind = data.draw(st.sampled_from(EntryKind))
                        first = data.draw(st.integers(model.base_index + 1, model.last + 1))
                        count = data.draw(st.integers(1, 4))
                        ents = tuple(
                            Entry(index=i, term=term, kind=kind, data=data.draw(payloads))
                            for i in range(first, first + count)
                        )
                    batch = WalBatch(hard_state=hard, entries=ents)
                wal.save(batch)
                model.apply(batch)
                assert wal.last_index == model.last
        finally:
            wal.close()
        rec = WriteAheadLog.open(directory)[1]
        assert rec.hard_state == model.hard_state
        assert rec.snapshot == model.snapshot
        assert list(rec.entries) == model.entries

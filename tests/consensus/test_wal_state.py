"""Lost state is refused, a crash is recovered, and a wiped replica starts over (issue 10.12).

A crash can only take back what was not durable yet (the torn tail of the
last batch, a segment whose creation had not been fsynced). A log truncated
to zero bytes, a deleted last segment, a hard state older than the one that
was revealed: none of these can come from a crash, and starting anyway could
let the node vote twice in a term (Raft paper Figure 2: ``currentTerm`` and
``votedFor`` are persistent state) or forget entries it acknowledged (section
5.3). The directory's ``STATE`` file makes the difference visible.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellmesh.consensus import (
    Entry,
    HardState,
    JoinState,
    WalBatch,
    WalCorrupted,
    WalLocked,
    WalStateLost,
    WalWrongNode,
    WriteAheadLog,
    prepare_directory,
    wipe_replica,
)
from cellmesh.consensus._walcodec import (
    STATE_SLOT_SIZE,
    DirState,
    MalformedRecord,
    decode_state,
    encode_state,
    newest_state,
)
from cellmesh.consensus.wal import iter_segment_paths


def fill(directory: Path, *, segment_size: int = 1 << 20, batches: int = 6) -> None:
    """A log whose node voted for 2 in term 5 and holds ``2 * batches`` entries."""
    with WriteAheadLog.open(directory, segment_size=segment_size)[0] as wal:
        for i in range(1, batches + 1):
            term = min(i, 5)
            wal.save(
                WalBatch(
                    hard_state=HardState(term=term, vote=2, commit=2 * i - 2),
                    entries=tuple(
                        Entry(index=j, term=term, data=b"x" * 30) for j in (2 * i - 1, 2 * i)
                    ),
                )
            )


def test_wal_truncated_to_zero_bytes_is_refused_naming_the_file(tmp_path: Path) -> None:
    """Figure 2: a WAL emptied to zero bytes must not come back as term 0, no vote."""
    fill(tmp_path)
    (segment,) = iter_segment_paths(tmp_path)
    segment.write_bytes(b"")
    with pytest.raises(WalStateLost) as info:
        WriteAheadLog.open(tmp_path)
    assert info.value.path == segment
    assert "truncated" in info.value.reason
    assert isinstance(info.value, WalCorrupted)
    assert segment.exists()  # a refused log is left as found


def test_wal_truncated_inside_its_first_batch_is_refused(tmp_path: Path) -> None:
    fill(tmp_path, batches=1)
    (segment,) = iter_segment_paths(tmp_path)
    segment.write_bytes(segment.read_bytes()[:-5])
    with pytest.raises(WalStateLost) as info:
        WriteAheadLog.open(tmp_path)
    assert info.value.path == segment


def test_wal_deleted_last_segment_is_refused_naming_the_file(tmp_path: Path) -> None:
    """Section 5.3: acknowledged entries must not vanish with a deleted segment file."""
    fill(tmp_path, segment_size=200)
    segments = list(iter_segment_paths(tmp_path))
    assert len(segments) > 3
    segments[-1].unlink()
    with pytest.raises(WalStateLost) as info:
        WriteAheadLog.open(tmp_path)
    assert info.value.path == segments[-1]  # the missing file, by its exact name
    assert "missing" in info.value.reason


def test_wal_deleted_middle_segment_is_refused_naming_the_next_file(tmp_path: Path) -> None:
    fill(tmp_path, segment_size=200)
    segments = list(iter_segment_paths(tmp_path))
    segments[1].unlink()
    with pytest.raises(WalCorrupted) as info:
        WriteAheadLog.open(tmp_path)
    assert info.value.path == segments[2]
    assert "segment 1 is missing" in info.value.reason


def test_wal_older_copy_of_the_log_is_refused_as_lost_hard_state(tmp_path: Path) -> None:
    """Figure 2: restoring an old copy of the log would forget a revealed term and vote."""
    fill(tmp_path, batches=2)
    (segment,) = iter_segment_paths(tmp_path)
    old = segment.read_bytes()
    with WriteAheadLog.open(tmp_path)[0] as wal:
        wal.save(WalBatch(hard_state=HardState(term=9, vote=3, commit=4)))
    segment.write_bytes(old)
    with pytest.raises(WalStateLost) as info:
        WriteAheadLog.open(tmp_path)
    assert info.value.path == tmp_path / "STATE"
    assert "term 9" in info.value.reason


def test_wal_torn_tail_is_still_recovered(tmp_path: Path) -> None:
    """A crash in the middle of the last batch (before save returned, so before STATE
    was rewritten) is an ordinary torn tail: cut and recovered."""
    fill(tmp_path, batches=2)
    state_before = (tmp_path / "STATE").read_bytes()
    with WriteAheadLog.open(tmp_path)[0] as wal:
        wal.save(
            WalBatch(
                hard_state=HardState(term=7, vote=1, commit=4),
                entries=(Entry(index=5, term=7),),
            )
        )
    (segment,) = iter_segment_paths(tmp_path)
    segment.write_bytes(segment.read_bytes()[:-7])
    (tmp_path / "STATE").write_bytes(state_before)
    wal, rec = WriteAheadLog.open(tmp_path)
    wal.close()
    assert rec.torn_tail is not None
    assert rec.hard_state == HardState(term=2, vote=2, commit=2)
    assert [e.index for e in rec.entries] == [1, 2, 3, 4]


def test_wal_crash_while_creating_a_segment_is_a_torn_tail(tmp_path: Path) -> None:
    """A new segment whose creation was not durable yet (STATE still names the previous
    one) may be empty after a crash: it is removed, nothing acknowledged lived there."""
    fill(tmp_path, segment_size=200, batches=3)
    segments = list(iter_segment_paths(tmp_path))
    name = segments[-1].name.split("-")
    seq = int(name[1], 16) + 1
    fresh = tmp_path / f"wal-{seq:016x}-{99:016x}.log"
    fresh.write_bytes(b"")
    wal, rec = WriteAheadLog.open(tmp_path)
    wal.close()
    assert rec.torn_tail is not None and rec.torn_tail.path == fresh
    assert not fresh.exists()
    assert [e.index for e in rec.entries] == list(range(1, 7))


def test_wal_log_without_state_file_is_refused(tmp_path: Path) -> None:
    fill(tmp_path)
    (tmp_path / "STATE").unlink()
    with pytest.raises(WalStateLost) as info:
        WriteAheadLog.open(tmp_path)
    assert info.value.path == tmp_path / "STATE"


def test_wal_state_file_survives_a_torn_record(tmp_path: Path) -> None:
    """STATE alternates between two slots: a torn rewrite leaves the older record."""
    fill(tmp_path, batches=2)
    path = tmp_path / "STATE"
    image = bytearray(path.read_bytes())
    newest = newest_state(bytes(image))
    assert newest is not None and newest.term == 2
    slot = (newest.sequence % 2) * STATE_SLOT_SIZE
    image[slot + 10] ^= 0xFF
    path.write_bytes(bytes(image))
    older = newest_state(bytes(image))
    assert older is not None and older.sequence == newest.sequence - 1
    WriteAheadLog.open(tmp_path)[0].close()  # the log is ahead of the older record: fine
    path.write_bytes(bytes(STATE_SLOT_SIZE * 2))
    with pytest.raises(WalCorrupted) as info:
        WriteAheadLog.open(tmp_path)
    assert info.value.path == path


def test_wal_directory_of_another_node_is_refused(tmp_path: Path) -> None:
    prepare_directory(tmp_path, node=1)
    fill(tmp_path)
    prepare_directory(tmp_path, node=1)
    with pytest.raises(WalWrongNode) as info:
        prepare_directory(tmp_path, node=2)
    assert (info.value.owner, info.value.node) == (1, 2)
    wal, rec = WriteAheadLog.open(tmp_path)
    wal.close()
    assert rec.node == 1


def test_wal_new_directory_can_be_marked_joining(tmp_path: Path) -> None:
    prepare_directory(tmp_path / "new", node=4, join=True)
    wal, rec = WriteAheadLog.open(tmp_path / "new")
    with wal:
        assert rec.node == 4 and rec.join == JoinState()
        wal.save(WalBatch(join=JoinState(floor=7)))
        wal.save(WalBatch(join=JoinState(floor=7, done=True)))
    prepare_directory(tmp_path / "new", node=4, join=False)  # ignored: it has state
    wal, rec = WriteAheadLog.open(tmp_path / "new")
    wal.close()
    assert rec.join == JoinState(floor=7, done=True)


def test_wipe_replica_removes_the_log_and_leaves_a_joining_directory(tmp_path: Path) -> None:
    """The operator's explicit way back from a refusal: wipe, then rejoin."""
    prepare_directory(tmp_path, node=3)
    fill(tmp_path, segment_size=200)
    segments = list(iter_segment_paths(tmp_path))
    segments[-1].unlink()  # lost state: refused ...
    with pytest.raises(WalStateLost):
        WriteAheadLog.open(tmp_path)
    report = wipe_replica(tmp_path)  # ... until wiped
    assert report.node == 3 and set(report.removed) == set(segments[:-1])
    assert sorted(os.listdir(tmp_path)) == ["LOCK", "STATE"]
    wal, rec = WriteAheadLog.open(tmp_path)
    with wal:
        assert rec.hard_state == HardState() and rec.entries == () and rec.snapshot is None
        assert rec.node == 3 and rec.join == JoinState()
        with pytest.raises(WalLocked):
            wipe_replica(tmp_path)  # never under a running node


def test_wipe_replica_refuses_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(WalCorrupted):
        wipe_replica(tmp_path / "nope")


U64 = st.integers(0, 2**64 - 1)


@given(
    st.builds(
        DirState,
        sequence=U64,
        node=st.none() | st.integers(1, 2**64 - 1),
        term=U64,
        vote=st.none() | U64,
        commit=U64,
        segment=st.none() | U64,
        segment_index=U64,
        segment_size=U64,
        joining=st.booleans(),
        join_floor=st.none() | U64,
        join_done=st.booleans(),
    )
)
def test_state_record_round_trips(state: DirState) -> None:
    assert decode_state(encode_state(state)) == state


@given(garbage=st.binary(max_size=2 * STATE_SLOT_SIZE + 10))
def test_state_file_garbage_raises_only_malformed_record(garbage: bytes) -> None:
    """Garbage in, only our typed error out (house rule 10)."""
    with contextlib.suppress(MalformedRecord):
        decode_state(garbage)
    newest_state(garbage)  # never raises: None or a valid record

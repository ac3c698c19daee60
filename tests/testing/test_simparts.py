"""The simulator's building blocks: the crashing disk and the deduplicating KV machine."""

from __future__ import annotations

import random

from cellmesh.consensus.types import Entry, HardState, Snapshot, SnapshotMeta
from cellmesh.testing.kvsm import Command, KVStateMachine
from cellmesh.testing.simdisk import SimDisk


def ents(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(index=i, term=term) for i in range(lo, hi + 1)]


def test_simdisk_sync_makes_writes_durable() -> None:
    disk = SimDisk()
    disk.write(None, ents(1, 3), HardState(term=1, vote=2, commit=0))
    disk.sync()
    disk.crash(random.Random(0))
    st = disk.recover()
    assert [e.index for e in st.entries] == [1, 2, 3]
    assert st.hard_state == HardState(term=1, vote=2, commit=0)


def test_simdisk_crash_loses_unsynced_writes_but_keeps_synced_prefix() -> None:
    """Whatever survives a crash is the synced state plus a prefix of later writes."""
    outcomes = set()
    for seed in range(200):
        disk = SimDisk()
        disk.write(None, ents(1, 2), HardState(term=1))
        disk.sync()
        disk.write(None, ents(3, 6), HardState(term=2, vote=1))
        disk.crash(random.Random(seed))
        st = disk.recover()
        idx = [e.index for e in st.entries]
        assert idx == list(range(1, len(idx) + 1)) and len(idx) >= 2
        if st.hard_state.term == 2:
            assert len(idx) == 6  # the hard state is written after the entries
        outcomes.add((len(idx), st.hard_state.term))
    assert (2, 1) in outcomes  # everything unsynced lost
    assert (6, 2) in outcomes  # everything flushed anyway
    assert any(2 < n < 6 for n, _ in outcomes)  # a torn write


def test_simdisk_overwrites_conflicting_suffix_and_snapshot_replaces_log() -> None:
    disk = SimDisk()
    disk.write(None, ents(1, 5, term=1), None)
    disk.write(None, ents(3, 4, term=2), None)
    disk.sync()
    assert [(e.index, e.term) for e in disk.recover().entries] == [(1, 1), (2, 1), (3, 2), (4, 2)]
    snap = Snapshot(meta=SnapshotMeta(index=10, term=3), data=b"s")
    disk.write(snap, (), HardState(term=3, commit=10))
    disk.sync()
    st = disk.recover()
    assert st.snapshot == snap and st.entries == []


def test_simdisk_local_snapshot_drops_only_covered_entries() -> None:
    disk = SimDisk()
    disk.write(None, ents(1, 5), None)
    disk.save_snapshot(Snapshot(meta=SnapshotMeta(index=3, term=1)))
    assert [e.index for e in disk.recover().entries] == [4, 5]


def test_kv_state_machine_applies_each_command_once() -> None:
    """Dissertation 6.3: duplicates of a client command return the first result."""
    kv = KVStateMachine()
    put = Command(client=1, seq=1, op="append", key="k", value="a")
    assert kv.apply(put) == ""
    assert kv.apply(put) == ""  # duplicate: same answer, no second append
    assert kv.read("k") == "a"
    assert kv.apply(Command(client=1, seq=2, op="get", key="k")) == "a"
    assert kv.apply(put) == ""  # an older duplicate is ignored
    assert kv.read("k") == "a"


def test_kv_state_machine_snapshot_round_trips_with_dedup_table() -> None:
    kv = KVStateMachine()
    kv.apply(Command(client=2, seq=5, op="put", key="x", value="v"))
    again = KVStateMachine.restore(kv.snapshot())
    assert again.data == kv.data and again.last == kv.last
    assert again.apply(Command(client=2, seq=5, op="put", key="x", value="other")) == ""
    assert again.read("x") == "v"
    assert KVStateMachine.restore(b"").data == {}


def test_command_encoding_round_trips() -> None:
    c = Command(client=3, seq=9, op="get", key="k1")
    assert Command.decode(c.encode()) == c

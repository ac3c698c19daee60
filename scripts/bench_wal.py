"""Benchmark the Raft write-ahead log: append throughput, syncs per batch, recovery time.

Prints, from one run:

* group-commit append throughput (entries/s, MB/s) for a few batch sizes, next
  to the floor: the same bytes written with one raw ``os.pwrite`` + one
  ``os.fdatasync`` per batch on a plain file, and the ratio;
* fdatasyncs per batch, counted by an injected syncer;
* recovery time of a log holding ``--entries`` entries (default 1,000,000).

Usage: .venv/bin/python scripts/bench_wal.py [--entries N] [--payload BYTES] [--dir PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from cellmesh.consensus.types import Entry, HardState
from cellmesh.consensus.wal import WalBatch, WriteAheadLog


class CountingSyncer:
    """Real syncs, counted."""

    def __init__(self) -> None:
        self.data = 0

    def sync_data(self, fd: int) -> None:
        self.data += 1
        os.fdatasync(fd)

    def sync_file(self, fd: int) -> None:
        os.fsync(fd)

    def sync_dir(self, fd: int) -> None:
        os.fsync(fd)


def make_batches(total: int, per_batch: int, payload: int) -> list[WalBatch]:
    data = b"x" * payload
    batches = []
    for first in range(1, total + 1, per_batch):
        last = min(first + per_batch - 1, total)
        batches.append(
            WalBatch(
                hard_state=HardState(term=1, vote=1, commit=first - 1),
                entries=tuple(Entry(index=i, term=1, data=data) for i in range(first, last + 1)),
            )
        )
    return batches


def bench_append(root: Path, total: int, per_batch: int, payload: int) -> None:
    batches = make_batches(total, per_batch, payload)
    directory = root / f"append-{per_batch}"
    syncer = CountingSyncer()
    wal, _ = WriteAheadLog.open(directory, syncer=syncer)
    with wal:
        started = time.perf_counter()
        for batch in batches:
            wal.save(batch)
        elapsed = time.perf_counter() - started
        stats = wal.stats()
    shutil.rmtree(directory)
    per_batch_bytes = stats.bytes_written // max(stats.batches, 1)
    floor = bench_floor(root, len(batches), per_batch_bytes)
    print(
        f"  batch={per_batch:>5} entries: {total / elapsed:>11,.0f} entries/s "
        f"{stats.bytes_written / elapsed / 1e6:7.1f} MB/s "
        f"{elapsed / len(batches) * 1e6:8.1f} us/batch"
        f"  fdatasync/batch={syncer.data / len(batches):.2f}"
        f"  | floor {floor * 1e6:8.1f} us/batch  ratio {elapsed / len(batches) / floor:5.2f}x"
    )
    # Group commit: exactly one fdatasync of the log per batch (the STATE record's
    # rare rewrites, the first batch's among them, come on top: counted above).
    if stats.data_syncs != len(batches) or stats.batches != len(batches):
        raise SystemExit(f"the WAL made {stats.data_syncs} log fdatasyncs for "
                         f"{len(batches)} batches of {per_batch}: it must make one per batch")


def bench_floor(root: Path, batches: int, size: int) -> float:
    """Seconds per batch of a raw pwrite + fdatasync of ``size`` bytes (the floor)."""
    path = root / "floor.bin"
    blob = b"y" * size
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        started = time.perf_counter()
        offset = 0
        for _ in range(batches):
            os.pwrite(fd, blob, offset)
            os.fdatasync(fd)
            offset += size
        return (time.perf_counter() - started) / batches
    finally:
        os.close(fd)
        path.unlink()


class NoSync:
    def sync_data(self, fd: int) -> None:
        pass

    def sync_file(self, fd: int) -> None:
        pass

    def sync_dir(self, fd: int) -> None:
        pass


def bench_recovery(root: Path, total: int, payload: int) -> None:
    directory = root / "recovery"
    started = time.perf_counter()
    with WriteAheadLog.open(directory, syncer=NoSync())[0] as wal:
        for batch in make_batches(total, 1000, payload):
            wal.save(batch)
        fill = time.perf_counter() - started
        segments = wal.stats().segments
    size = sum(p.stat().st_size for p in directory.glob("wal-*.log"))
    started = time.perf_counter()
    wal, rec = WriteAheadLog.open(directory)
    elapsed = time.perf_counter() - started
    wal.close()
    assert len(rec.entries) == total
    print(
        f"  recovered {total:,} entries ({size / 1e6:.1f} MB in {segments} segments) "
        f"in {elapsed:.2f} s = {total / elapsed:,.0f} entries/s  (filled unsynced in {fill:.1f} s)"
    )
    shutil.rmtree(directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--payload", type=int, default=64, help="bytes per entry")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: tmp)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-wal-", dir=args.dir))
    try:
        print(f"WAL benchmark in {root} ({args.payload}-byte entries)")
        print("append (group commit: one pwrite + one fdatasync per batch):")
        for per_batch, total in ((1, 2_000), (64, 64_000), (1024, 256_000)):
            bench_append(root, total, per_batch, args.payload)
        print("recovery:")
        bench_recovery(root, args.entries, args.payload)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

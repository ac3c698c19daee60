"""limits.memory holds without the cgroup v2 memory controller (issue 10 item 9).

The attack: under ``--mem 256M`` (enforced by ``RLIMIT_DATA`` alone) a cell
held 2.2 GB through ``MAP_SHARED`` mappings and memfds, which that limit does
not count. The backstop (``RLIMIT_AS`` at the limit plus ``AS_HEADROOM``,
``RLIMIT_FSIZE`` at the limit, ``MALLOC_ARENA_MAX=2``) must stop it while a
normal cell under the same limit still starts, allocates, runs trio's worker
threads and maps vesicles. Both run as real cells (host and bwrap backends).
"""

from __future__ import annotations

import pytest

from cellmesh.sandbox import CellBackend, Limits
from cellmesh.sandbox._limits import AS_HEADROOM

from .conftest import run_probe

LIMIT = 256 << 20

LEGIT = """
import json, os, time
import trio
import cellmesh.actors.runtime  # everything a cell process imports
from cellmesh.wire.vesicle import Vesicle

# The private memory the limit allows is all there (RLIMIT_DATA, not the
# address-space backstop, is what stops it): grow until refused.
chunks = []
try:
    while True:
        chunks.append(bytearray(8 << 20))
except MemoryError:
    pass
reached = 8 * len(chunks)
chunks.clear()

async def main():
    async with trio.open_nursery() as nursery:  # worker threads: 8 MiB stacks each
        for _ in range(8):
            nursery.start_soon(trio.to_thread.run_sync, time.sleep, 0.2)
    payload = os.urandom(1 << 20) * 16
    with Vesicle.from_bytes(payload) as vesicle:  # a 16 MiB memfd, mapped
        return vesicle.tobytes() == payload

same = trio.run(main)
arenas = os.environ.get("MALLOC_ARENA_MAX")
print(json.dumps({"vesicle": same, "private_mib": reached, "arenas": arenas}))
"""


ATTACK = """
import json, mmap, os
out = {}
try:  # one big shared anonymous mapping, touched
    m = mmap.mmap(-1, 2200 << 20, mmap.MAP_SHARED)
    out["shared_2g"] = "mapped"
except OSError as e:
    out["shared_2g"] = e.errno
held = []
try:  # 64 MiB shared chunks, each touched, until refused
    while len(held) < 64:
        m = mmap.mmap(-1, 64 << 20, mmap.MAP_SHARED)
        m[::4096] = b"x" * (64 << 8)
        held.append(m)
except OSError as e:
    out["chunks_errno"] = e.errno
out["shared_mib"] = 64 * len(held)
for m in held:
    m.close()
fd = os.memfd_create("hog")
try:  # a memfd sized 2.2 GB, then mapped
    os.ftruncate(fd, 2200 << 20)
    out["memfd_truncate"] = "grown"
except OSError as e:
    out["memfd_truncate"] = e.errno
os.close(fd)
fd = os.memfd_create("hog2")
written = 0
try:  # a memfd filled by write() alone, never mapped
    chunk = b"y" * (16 << 20)
    while written < (2200 << 20):
        written += os.write(fd, chunk)
except OSError as e:
    out["memfd_write_errno"] = e.errno
out["memfd_written_mib"] = written >> 20
print(json.dumps(out))
"""


def test_a_normal_cell_under_256m_still_works(real_backend: CellBackend) -> None:
    status, out = run_probe(real_backend, "legit", LEGIT, limits=Limits(memory=LIMIT))
    assert status.reason == "exit", status
    assert out["vesicle"] is True and out["arenas"] == "2"
    # The interpreter's own heap comes out of the limit too (about 30 MiB).
    assert int(out["private_mib"]) >= (LIMIT >> 20) - 48  # type: ignore[call-overload]


def test_shared_memory_and_memfds_cannot_bypass_the_memory_limit(
    real_backend: CellBackend,
) -> None:
    status, out = run_probe(real_backend, "hog", ATTACK, limits=Limits(memory=LIMIT))
    assert status.reason == "exit", status
    assert out["shared_2g"] == 12  # ENOMEM: RLIMIT_AS
    assert out["chunks_errno"] == 12
    assert 0 < int(out["shared_mib"]) <= (LIMIT + AS_HEADROOM) >> 20  # type: ignore[call-overload]
    assert out["memfd_truncate"] == 27  # EFBIG: RLIMIT_FSIZE
    assert out["memfd_write_errno"] == 27
    assert out["memfd_written_mib"] == LIMIT >> 20


def test_without_a_memory_limit_nothing_is_capped(real_backend: CellBackend) -> None:
    code = "import json, os; print(json.dumps({'arenas': os.environ.get('MALLOC_ARENA_MAX')}))"
    status, out = run_probe(real_backend, "free", code)
    assert status.reason == "exit"
    assert out == {"arenas": None}


@pytest.mark.parametrize("limit_mib", [64, 128])
def test_small_limits_still_start_the_cell_runtime(
    real_backend: CellBackend, limit_mib: int
) -> None:
    code = "import json, trio, cellmesh.actors.runtime; print(json.dumps({'ok': True}))"
    limits = Limits(memory=limit_mib << 20)
    status, out = run_probe(real_backend, f"small{limit_mib}", code, limits=limits)
    assert status.reason == "exit", status
    assert out == {"ok": True}

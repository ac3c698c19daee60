"""What the RLIMIT_AS memory backstop costs a cell, and what it stops.

Runs a cell-like Python process (it imports the cell runtime) under a memory
limit enforced the way the sandbox does without the cgroup v2 memory
controller: RLIMIT_DATA at the limit, and -- for each candidate headroom --
RLIMIT_AS at the limit plus that headroom and RLIMIT_FSIZE at the limit,
MALLOC_ARENA_MAX=2. Prints, per headroom: the private memory the process can
still allocate (8 MiB steps until MemoryError), whether 8 worker threads and a
16 MiB vesicle work, and how much MAP_SHARED memory it can hold (64 MiB
chunks). "none" is RLIMIT_DATA alone (the old behaviour: the bypass).

    .venv/bin/python scripts/measure_memory_backstop.py [--limit-mib 256]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

PROBE = """
import json, mmap, os, time
import trio
import cellmesh.actors.runtime
from cellmesh.wire.vesicle import Vesicle
vsz = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) >> 10
chunks = []
try:
    while True:
        chunks.append(bytearray(8 << 20))
except MemoryError:
    pass
private = 8 * len(chunks)
chunks.clear()
async def main():
    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(trio.to_thread.run_sync, time.sleep, 0.1)
    payload = os.urandom(1 << 20) * 16
    with Vesicle.from_bytes(payload) as vesicle:
        return vesicle.tobytes() == payload
ok = trio.run(main)
held = []
try:
    while len(held) < 40:
        m = mmap.mmap(-1, 64 << 20, mmap.MAP_SHARED)
        m[::4096] = b"x" * (64 << 8)
        held.append(m)
except OSError:
    pass
print(json.dumps({"vsz": vsz, "private": private, "ok": ok, "shared": 64 * len(held)}))
"""


def run(limit: int, headroom: int | None) -> dict[str, object]:
    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
        if headroom is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit + headroom, limit + headroom))
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = subprocess.run(
        [sys.executable, "-c", PROBE], preexec_fn=limits, capture_output=True, text=True,
        env={"MALLOC_ARENA_MAX": "2", "PATH": "/usr/bin:/bin"}, check=False, timeout=120,
    )
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1:]}
    result: dict[str, object] = json.loads(out.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit-mib", type=int, default=256)
    parser.add_argument("--json", action="store_true", help="one JSON document")
    args = parser.parse_args()
    limit = args.limit_mib << 20
    rows = {}
    for headroom in (None, 0, 16, 64, 256):
        key = "none" if headroom is None else f"{headroom} MiB"
        rows[key] = run(limit, None if headroom is None else headroom << 20)
    if args.json:
        print(json.dumps({"limit_mib": args.limit_mib, "rows": rows}))
        return
    print(f"memory limit {args.limit_mib} MiB (RLIMIT_DATA); backstop RLIMIT_AS = limit + headroom")
    print(f"{'headroom':>10} {'idle VSZ':>9} {'private reachable':>18} {'threads+vesicle':>16} "
          f"{'MAP_SHARED held':>16}")
    for key, row in rows.items():
        if "error" in row:
            print(f"{key:>10} failed: {row['error']}")
            continue
        print(f"{key:>10} {row['vsz']:>6} MiB {row['private']:>14} MiB {row['ok']!s:>16} "
              f"{row['shared']:>12} MiB")


if __name__ == "__main__":
    main()

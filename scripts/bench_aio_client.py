"""The asyncio client against the Trio synapse, same server, same run.

One server process (``python -m cellmesh.bench.wire_server cellmesh SOCK``:
a membrane echoing ``bench.Ping``). Rounds alternate between the baseline,
the Trio :class:`cellmesh.Synapse` (``trio.run``), and the measured
:class:`cellmesh.aio.Synapse` (``asyncio.run``), each on a fresh connection
after a warm-up:

* RTT: ``fire(Ping)`` one at a time, median of the round's calls;
* pipelined: ``fire_many`` of ``--batch`` pings, ``--batches`` times in a
  row, messages per second.

Prints the medians over rounds and the median of the per-round ratios
(asyncio / Trio: above 1 is slower for RTT, below 1 is slower for
throughput). ``--quick`` for a short run, ``--json`` for every number.

Run: ``.venv/bin/python scripts/bench_aio_client.py [--quick] [--json]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

import cellmesh
from cellmesh import aio
from cellmesh.bench._cellmesh import Ping


async def measure(syn: Any, calls: int, batch: int, batches: int) -> tuple[float, float]:
    """RTT median (us) and pipelined rate (/s) on one synapse: the calls are the same for
    both clients, so one coroutine serves the Trio and the asyncio round alike."""
    await syn.fire_many([Ping(i) for i in range(200)])  # warm-up
    samples = []
    for i in range(calls):
        t0 = time.perf_counter()
        await syn.fire(Ping(i))
        samples.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(batches):
        await syn.fire_many([Ping(i) for i in range(batch)])
    return statistics.median(samples) * 1e6, batch * batches / (time.perf_counter() - t0)


def trio_round(path: str, calls: int, batch: int, batches: int) -> tuple[float, float]:
    async def main() -> tuple[float, float]:
        async with cellmesh.Synapse.grow("bench", socket_path=path) as syn:
            return await measure(syn, calls, batch, batches)

    return trio.run(main)


def aio_round(path: str, calls: int, batch: int, batches: int) -> tuple[float, float]:
    async def main() -> tuple[float, float]:
        async with aio.Synapse.grow("bench", socket_path=path) as syn:
            return await measure(syn, calls, batch, batches)

    return asyncio.run(main())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="3 rounds, fewer calls")
    parser.add_argument("--json", action="store_true", help="print every number as JSON")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.calls, args.batches = 3, 500, 10
    with tempfile.TemporaryDirectory(prefix="cm-") as tmp:
        path = str(Path(tmp) / "bench.sock")
        server = subprocess.Popen(
            [sys.executable, "-m", "cellmesh.bench.wire_server", "cellmesh", path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "READY"
            rows: dict[str, list[tuple[float, float]]] = {"trio": [], "asyncio": []}
            runners: dict[str, Callable[[str, int, int, int], tuple[float, float]]] = {
                "trio": trio_round, "asyncio": aio_round,
            }
            for _ in range(args.rounds):
                for name in ("trio", "asyncio"):
                    rows[name].append(runners[name](path, args.calls, args.batch, args.batches))
        finally:
            if server.stdin is not None:
                server.stdin.close()  # the server exits at EOF on stdin
            server.wait(30)
    rtt_ratio = statistics.median(a[0] / t[0] for a, t in zip(rows["asyncio"], rows["trio"],
                                                                   strict=True))
    rate_ratio = statistics.median(a[1] / t[1] for a, t in zip(rows["asyncio"], rows["trio"],
                                                                    strict=True))
    result: dict[str, Any] = {
        "rounds": args.rounds, "calls": args.calls, "batch": args.batch,
        "batches": args.batches, "cpus": os.cpu_count(),
        **{name: {"rtt_us": [r[0] for r in rows[name]],
                  "pipelined_per_s": [r[1] for r in rows[name]]} for name in rows},
        "rtt_ratio": rtt_ratio, "pipelined_ratio": rate_ratio,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    med = statistics.median
    print(f"asyncio client vs Trio synapse, {args.rounds} interleaved rounds, one server process")
    print(f"{'metric':<28}{'asyncio':>14}{'trio (baseline)':>18}{'ratio':>9}")
    print(f"{'RTT median, one call':<28}{med(r[0] for r in rows['asyncio']):>11.1f} us"
          f"{med(r[0] for r in rows['trio']):>15.1f} us{rtt_ratio:>8.2f}x")
    print(f"{'pipelined fire_many':<28}{med(r[1] for r in rows['asyncio']):>10.0f} /s"
          f"{med(r[1] for r in rows['trio']):>14.0f} /s{rate_ratio:>8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a cell's metrics cost on the hot path: plain receptors vs a Cell with its stats.

Both sides serve the same receptor in this process; a synapse pipelines
``--calls`` pings per round with ``fire_many``. Baseline: a membrane whose
handler is a plain :class:`cellmesh.Receptors`. Measured: the same receptor
as a :class:`cellmesh.Cell` served by the runtime's ``serve_cell`` (message
counters, one call in 16 timed). Rounds alternate; the ratio is the median
of the per-round ratios. A second, smaller figure: the dispatch lookup alone
(``timeit``), ``Receptors.lookup`` vs ``CellReceptors.lookup``.

Run: ``.venv/bin/python scripts/bench_cell_stats.py [--rounds 9] [--calls 2000]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import timeit
from pathlib import Path

import trio

import cellmesh
from cellmesh.actors._stats import ServiceTimes
from cellmesh.actors.cell import CellReceptors
from cellmesh.actors.runtime import serve_cell


@cellmesh.protein("bench.stats.Ping")
class Ping:
    n: int


class Echo(cellmesh.Cell):
    @cellmesh.receptor
    async def ping(self, msg: Ping) -> Ping:
        return msg


async def plain_ping(msg: Ping) -> Ping:
    return msg


async def timed_round(socket_dir: Path, name: str, calls: int) -> float:
    """ns per call of one pipelined batch (after a warm-up batch)."""
    async with cellmesh.Synapse.grow(name, socket_dir=socket_dir) as syn:
        msgs = [Ping(i) for i in range(calls)]
        await syn.fire_many(msgs)
        t0 = time.perf_counter_ns()
        await syn.fire_many(msgs)
        return (time.perf_counter_ns() - t0) / calls


async def end_to_end(rounds: int, calls: int) -> tuple[list[float], list[float]]:
    plain: list[float] = []
    cell: list[float] = []
    with tempfile.TemporaryDirectory(prefix="cmst-", dir="/tmp") as d:
        socket_dir = Path(d)
        receptors = cellmesh.Receptors({Ping: plain_ping})
        async with trio.open_nursery() as nursery, cellmesh.open_membrane(
            "plain", receptors, socket_dir=socket_dir
        ):
            running = await nursery.start(
                lambda task_status: serve_cell(
                    Echo(), name="cell", socket_dir=socket_dir, task_status=task_status
                )
            )
            for _ in range(rounds):
                plain.append(await timed_round(socket_dir, "plain", calls))
                cell.append(await timed_round(socket_dir, "cell", calls))
            running.stop()
    return plain, cell


def lookups(number: int) -> tuple[float, float]:
    plain = cellmesh.Receptors({Ping: plain_ping})
    timed = CellReceptors({Ping: plain_ping}, ServiceTimes())
    best_plain = min(timeit.repeat(lambda: plain.lookup(Ping), number=number, repeat=7))
    best_cell = min(timeit.repeat(lambda: timed.lookup(Ping), number=number, repeat=7))
    return best_plain / number * 1e9, best_cell / number * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    plain, cell = trio.run(end_to_end, args.rounds, args.calls)
    ratios = [c / p for p, c in zip(plain, cell, strict=True)]
    print(f"end to end, {args.calls} pipelined calls per round, {args.rounds} rounds:")
    print(f"  plain Receptors membrane   {statistics.median(plain):8.0f} ns/call (median)")
    print(f"  Cell with stats            {statistics.median(cell):8.0f} ns/call (median)")
    print(f"  ratio cell/plain           {statistics.median(ratios):8.3f}x "
          f"(per round {min(ratios):.3f}-{max(ratios):.3f})")
    lp, lc = lookups(200_000)
    print("dispatch lookup alone (timeit, best of 7):")
    print(f"  Receptors.lookup           {lp:8.1f} ns")
    print(f"  CellReceptors.lookup       {lc:8.1f} ns  (+{lc - lp:.1f} ns: the counter; "
          "the 1 in 16 timed calls pay a wrapper too)")


if __name__ == "__main__":
    main()

"""The load of ``cellmesh bench swap``: callers in their own process, measured there.

Run as ``python -m cellmesh.bench._swap_load SOCKET TASKS``. ``TASKS``
callers, each on its own connection, call the cell at ``SOCKET`` in a tight
loop and record every call's start (``time.monotonic``, comparable with the
bench process) and duration. The process prints ``ready`` once every caller
has an answer, then reads one JSON line from stdin: ``{"windows": [[t0, t1],
...]}`` (the swaps, monotonic seconds). It stops the callers and prints one
JSON line: calls made, calls failed (and the first errors), the slowest call
overlapping a window, and the latency percentiles of the calls outside every
window (the steady state of the same run).
"""

from __future__ import annotations

import array
import bisect
import json
import sys
import time
from typing import Any

import attrs
import trio

from ..errors import CellmeshError
from ..transport.synapse import Synapse
from ..wire.proteins import protein
from ._stats import median, percentile


@protein("cellmesh.bench.swap.Add")
class Add:
    """One increment (the cell answers with the new total)."""

    n: int


@attrs.define(eq=False)
class _Load:
    """What the callers share: the stop, the first-answer count, the records."""

    tasks: int
    stop: trio.Event = attrs.Factory(trio.Event)
    all_answered: trio.Event = attrs.Factory(trio.Event)
    answered: int = 0
    starts: array.array[float] = attrs.Factory(lambda: array.array("d"))
    durations: array.array[float] = attrs.Factory(lambda: array.array("d"))
    errors: list[str] = attrs.Factory(list)

    async def caller(self, path: str) -> None:
        async with Synapse.grow("bench", socket_path=path) as syn:
            first = True
            while not self.stop.is_set():
                t0 = time.monotonic()
                try:
                    await syn.fire(Add(n=1))
                except CellmeshError as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                self.starts.append(t0)
                self.durations.append(time.monotonic() - t0)
                if first:
                    first = False
                    self.answered += 1
                    if self.answered == self.tasks:
                        self.all_answered.set()


def summarise(
    starts: array.array[float], durations: array.array[float], windows: list[list[float]]
) -> dict[str, Any]:
    """Split the calls into those overlapping a swap window and the steady state."""
    windows = sorted(windows)
    begins = [w[0] for w in windows]
    during: list[float] = []
    steady: list[float] = []
    for t0, took in zip(starts, durations, strict=True):
        t1 = t0 + took
        i = bisect.bisect_right(begins, t1) - 1  # the last window that began before t1
        overlap = i >= 0 and windows[i][1] >= t0
        (during if overlap else steady).append(took * 1000.0)
    out: dict[str, Any] = {
        "calls": len(starts), "calls_during_swaps": len(during),
        "slowest_during_swap_ms": max(during) if during else None,
    }
    if steady:
        out.update(
            steady_median_ms=median(steady), steady_p99_ms=percentile(steady, 99),
            steady_max_ms=max(steady),
        )
    return out


async def _main(path: str, tasks: int) -> None:
    load = _Load(tasks=tasks)
    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            nursery.start_soon(load.caller, path)
        await load.all_answered.wait()
        print("ready", flush=True)
        line = await trio.to_thread.run_sync(sys.stdin.readline)
        load.stop.set()
    request = json.loads(line or "{}")
    result = summarise(load.starts, load.durations, request.get("windows", []))
    result.update(failed=len(load.errors), errors=load.errors[:5])
    print(json.dumps(result), flush=True)


def main() -> None:
    """Entry point: ``python -m cellmesh.bench._swap_load SOCKET TASKS``."""
    trio.run(_main, sys.argv[1], int(sys.argv[2]))


if __name__ == "__main__":
    main()

"""Benchmark the cost of starting a cell sandboxed vs a plain process (median ms).

For two workloads -- ``/usr/bin/true`` (pure spawn cost) and ``python -c pass``
(what a Python cell pays before its first line) -- measures spawn-to-exit
wall time of:

* the floor: a plain ``subprocess.Popen(...).wait()``;
* the host backend (hygiene, rlimits, cgroup leaf join, log capture);
* the bwrap backend (all namespaces, the full filesystem profile);

with rounds interleaved so drift hits all variants equally, and prints each
median next to the floor and the ratio. Each backend measurement is one
``spawn`` + ``wait`` of an already created cell (``create``/``destroy`` are
measured separately, once per cell).

Cells get memory 512M, nofile 1024 and (unless ``--pids 0``) a pids limit:
on a host where only the cgroup v1 pids controller can enforce it, joining
that cgroup before exec is a large share of the cost (a v1 migration waits
for an RCU grace period); ``--pids 0`` shows the cost without it.

Usage: .venv/bin/python scripts/bench_spawn_sandbox.py [--rounds N] [--pids N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cellmesh.config import Paths
from cellmesh.sandbox import (
    BwrapBackend,
    CellBackend,
    CellSpec,
    CgroupHost,
    HostBackend,
    Limits,
    MemoryEventLog,
    MemorySecretBroker,
)
from cellmesh.sandbox._bwrap import find_bwrap, probe_bwrap

WORKLOADS = {"true": ["/usr/bin/true"], "python -c pass": [sys.executable, "-c", "pass"]}


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def _plain(argv: list[str], out: int) -> Callable[[], object]:
    return lambda: subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out).wait()


def _cell(backend: CellBackend, cell_id: str, out: int) -> Callable[[], object]:
    def run() -> object:
        backend.spawn(cell_id, stdout=out)
        return backend.wait(cell_id)

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--json", action="store_true", help="print raw numbers as JSON")
    parser.add_argument(
        "--pids", type=int, default=256, help="pids limit of the cells (0: none, no pids cgroup)"
    )
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="cellmesh-bench-"))
    paths = Paths.from_env({"CELL_HOME": str(home)})
    cgroups = CgroupHost.detect()
    common = (paths, MemoryEventLog(), MemorySecretBroker(), cgroups)
    backends: dict[str, CellBackend] = {"host": HostBackend(*common)}
    bwrap = find_bwrap()
    problem = probe_bwrap(bwrap)
    if problem is None and bwrap is not None:
        backends["bwrap"] = BwrapBackend(*common, bwrap=bwrap)
    else:
        print(f"# bwrap not measured: {problem}", file=sys.stderr)

    limits = Limits(memory=512 << 20, pids=args.pids or None, open_files=1024)
    devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    variants: dict[str, Callable[[], object]] = {}
    create_ms: dict[str, float] = {}
    destroy_ms: dict[str, float] = {}
    for wname, argv in WORKLOADS.items():
        variants[f"plain | {wname}"] = _plain(argv, devnull)
        for bname, be in backends.items():
            cell_id = f"bench-{bname}-{len(variants)}"
            spec = CellSpec(name=cell_id, argv=argv, limits=limits)
            start = time.perf_counter()
            be.create(spec)
            create_ms[bname] = (time.perf_counter() - start) * 1000.0
            variants[f"{bname} | {wname}"] = _cell(be, cell_id, devnull)

    for fn in variants.values():  # warm-up (page cache, pyc files)
        fn()
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for key, fn in variants.items():
            samples[key].append(_timed(fn))

    os.close(devnull)
    for bname, be in backends.items():
        for cell_id in list(be.tracked()):
            start = time.perf_counter()
            be.destroy(cell_id)
            destroy_ms[bname] = (time.perf_counter() - start) * 1000.0

    shutil.rmtree(home, ignore_errors=True)
    medians = {k: statistics.median(v) for k, v in samples.items()}
    if args.json:
        report = {
            "medians_ms": medians,
            "samples_ms": samples,
            "create_ms": create_ms,
            "destroy_ms": destroy_ms,
            "limits": plan_summary(limits, cgroups),
        }
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"spawn-to-exit, median of {args.rounds} interleaved rounds "
        f"(limits enforced by: {plan_summary(limits, cgroups)})"
    )
    print(f"{'variant':<28}{'median ms':>11}{'vs plain':>10}")
    for wname in WORKLOADS:
        floor = medians[f"plain | {wname}"]
        for key in [k for k in medians if k.endswith(f"| {wname}")]:
            print(f"{key:<28}{medians[key]:>11.2f}{medians[key] / floor:>9.2f}x")
    for bname in backends:
        print(
            f"{bname}: create {create_ms[bname]:.2f} ms, destroy {destroy_ms.get(bname, 0):.2f} ms"
        )
    return 0


def plan_summary(limits: Limits, cgroups: CgroupHost) -> str:
    from cellmesh.sandbox import plan_limits

    return ", ".join(f"{k}={v}" for k, v in sorted(plan_limits(limits, cgroups).to_json().items()))


if __name__ == "__main__":
    sys.exit(main())

"""``cellmesh bench swap``: hot swaps under load -- time to serving, the slowest call, failures.

Theory of operation
-------------------
A real root runs in this process (:func:`~cellmesh.testing.mesh.open_root`)
on a private ``CELL_HOME`` under /tmp, with a counter cell whose code this
file writes (:data:`CELL_SOURCE`) and rewrites between swaps (two versions
that hand the counter over). The load runs in another process
(:mod:`cellmesh.bench._swap_load`): ``callers`` tasks, each on its own
connection, call the counter in a tight loop and time every call.

Three runs, each of a number of hot swaps one after the other while the load
runs (``settle`` seconds apart, so that the standby a swap leaves behind has
imported the runtime before the next swap, as between swaps in practice):
the counter alone (a few bytes of state), the counter with a
10 MiB blob in its state (handed over as a vesicle on every swap), and a
replicated counter of 3 replicas (:data:`REPLICATED_SOURCE`: its state is
its log, each replica restarts on the new code and catches up, followers
first, the leader last; the callers' synapses use sessions). Per swap
the root's report gives the time from the request to the new version
serving (``serving_ms``; for the replicated counter: until every replica
runs the new code and caught up) and how long the cell took no new work
(from the old version's suspension to the new one's readiness). The load process
splits its calls into those that overlapped a swap and the rest: the
slowest call during a swap is compared with the steady-state p99 of the
same run. Calls that failed are counted (the target is none).

The baseline for the time to serving, in the same run: a cell restart
that needs a new process (``standby = false``, killed with SIGKILL, timed
to its first answer) -- what a swap would cost if it started the new
version from scratch; a swap lets the cell's standby take over with the
new code instead. Nothing here asserts a speed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Final

import attrs
import trio

from ..actors.control import SwapCell, SwapReport
from ..actors.root import Root
from ..errors import CellUnavailable
from ..sandbox._bwrap import find_bwrap, probe_bwrap
from ..testing.mesh import open_root
from ..transport.synapse import Synapse
from ._stats import median, percentile
from ._swap_load import Add

__all__ = [
    "CELL_SOURCE", "REPLICATED_SOURCE", "TARGETS", "SwapParams", "format_report", "main",
    "run_swap_bench",
]

#: Targets from the issue: (measurement key, limit, unit).
TARGETS: Final = (
    ("failed_calls", 0, "calls"),
    ("serving_median_ms", 250.0, "ms"),
    ("slowest_during_swap_ms", 300.0, "ms"),
)
_BLOB: Final = 10 << 20
_TIMEOUT: Final = 60.0

#: The counter the bench swaps (``{version}``, ``{blob}`` filled in).
CELL_SOURCE: Final = '''\
"""The counter of ``cellmesh bench swap``, version {version!r}."""

import cellmesh


@cellmesh.protein("cellmesh.bench.swap.Add")
class Add:
    n: int


@cellmesh.protein("cellmesh.bench.swap.State")
class State:
    total: int
    blob: bytes


class Counter(cellmesh.Cell):
    version = {version!r}

    async def on_start(self):
        self.total = 0
        self.blob = bytes({blob})

    @cellmesh.receptor
    async def add(self, msg: Add) -> Add:
        self.total += msg.n
        return Add(self.total)

    async def on_swap_out(self):
        return State(total=self.total, blob=self.blob)

    async def on_swap_in(self, state, old):
        self.total = state.total
        self.blob = state.blob
'''

#: The replicated counter the bench swaps (``{version}`` filled in): same Add, same answers.
REPLICATED_SOURCE: Final = '''\
"""The replicated counter of ``cellmesh bench swap``, version {version!r}."""

import cbor2
import cellmesh


@cellmesh.protein("cellmesh.bench.swap.Add")
class Add:
    n: int


class Counter(cellmesh.ReplicatedCell):
    version = {version!r}
    commands = (Add,)

    def __init__(self):
        self.total = 0

    def apply(self, command, meta):
        self.total += command.n
        return Add(self.total)

    def snapshot(self):
        return cbor2.dumps(self.total)

    def restore(self, data):
        self.total = cbor2.loads(data)
'''

_REPLICATED_TOML: Final = (
    '[cells.bench]\ndna = "bench.py"\nentry = "bench:Counter"\nreplicas = 3\n'
)

_RESTART_TOML: Final = (
    '[supervisor]\nintensity = 1000\nperiod = 1\n\n'
    '[cells.fresh]\ndna = "bench.py"\nstandby = false\n'
)


@attrs.frozen(kw_only=True)
class SwapParams:
    """How many swaps, callers and restarts; the sandbox; the probation of each swap."""

    swaps: int = 100
    big_swaps: int = 30
    #: Swaps of the 3-replica counter (each restarts three replicas).
    replicated_swaps: int = 6
    callers: int = 16
    restarts: int = 15
    sandbox: str = "bwrap"
    grace: float = 0.05
    #: Seconds between swaps, so the standby a swap leaves behind has finished
    #: importing before the next one (the steady state; 0: back to back).
    settle: float = 0.6

    def __attrs_post_init__(self) -> None:
        if min(self.swaps, self.callers, self.restarts) < 1 or min(
            self.big_swaps, self.replicated_swaps
        ) < 0:
            raise ValueError("swaps, callers and restarts must be >= 1")
        if self.sandbox not in ("bwrap", "host"):
            raise ValueError(f"sandbox must be bwrap or host, got {self.sandbox!r}")


#: A shorter run.
QUICK: Final = SwapParams(swaps=12, big_swaps=4, replicated_swaps=2, callers=8, restarts=5)


def _home() -> Path:
    return Path(tempfile.mkdtemp(prefix="cmb-", dir="/tmp"))


def _write(home: Path, version: str, blob: int, *, replicated: bool = False) -> None:
    text = (REPLICATED_SOURCE.format(version=version) if replicated
            else CELL_SOURCE.format(version=version, blob=blob))
    (home / "bench.py").write_text(text)


async def _swap(root: Root, grace: float) -> SwapReport:
    async with Synapse.grow("mitosis", socket_path=root.paths.umbilical) as syn:
        report = await syn.fire(SwapCell(name="bench", timeout=_TIMEOUT, grace=grace))
    assert isinstance(report, SwapReport)
    return report


def _start_load(socket_path: Path, callers: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cellmesh.bench._swap_load", str(socket_path), str(callers)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise RuntimeError("the load process did not start")
    return proc


def _finish_load(proc: subprocess.Popen[str], windows: list[list[float]]) -> dict[str, Any]:
    out, _ = proc.communicate(json.dumps({"windows": windows}) + "\n", timeout=120)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


async def _run(
    params: SwapParams, swaps: int, blob: int, say: Callable[[str], None], *,
    replicated: bool = False,
) -> dict[str, Any]:
    """``swaps`` swaps of the counter (``blob`` bytes of state; or the replicated one)
    under the load."""
    home = _home()
    try:
        _write(home, "a", blob, replicated=replicated)
        toml = _REPLICATED_TOML if replicated else '[cells.bench]\ndna = "bench.py"\n'
        async with open_root(home, toml, sandbox=params.sandbox, stop_timeout=30) as root:
            load = await trio.to_thread.run_sync(
                _start_load, root.paths.socket_path("bench"), params.callers
            )
            reports: list[SwapReport] = []
            windows: list[list[float]] = []
            try:
                for i in range(swaps):
                    await trio.sleep(params.settle)
                    _write(home, "b" if i % 2 == 0 else "a", blob, replicated=replicated)
                    t0 = time.monotonic()
                    report = await _swap(root, params.grace)
                    windows.append([t0, time.monotonic()])
                    reports.append(report)
            finally:
                result = await trio.to_thread.run_sync(_finish_load, load, windows)
        what = "of 3 replicas" if replicated else f"with {blob} bytes of extra state"
        say(f"  {swaps} swaps {what}: done")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    serving = [r.serving_ms for r in reports if r.serving_ms is not None]
    unavailable = [
        r.timeline["probation"] - r.timeline["suspending"]
        for r in reports if "probation" in r.timeline and "suspending" in r.timeline
    ]
    outcomes = {o: sum(r.outcome == o for r in reports) for o in {r.outcome for r in reports}}
    totals = [r.total_ms for r in reports]
    doc: dict[str, Any] = {
        "swaps": swaps, "outcomes": outcomes, "state_bytes": reports[-1].state_bytes,
        "serving_ms": serving,
        "serving_median_ms": median(serving) if serving else None,
        "serving_p90_ms": percentile(serving, 90) if serving else None,
        "serving_max_ms": max(serving) if serving else None,
        "no_new_work_median_ms": median(unavailable) if unavailable else None,
        "no_new_work_max_ms": max(unavailable) if unavailable else None,
        "total_median_ms": median(totals) if totals else None,
        "total_max_ms": max(totals) if totals else None,
        **result,
    }
    return doc


async def _restarts(params: SwapParams) -> list[float]:
    """Kill -9 of a ``standby = false`` cell to its first answer (a new process), in ms."""
    home = _home()
    try:
        _write(home, "a", 0)
        async with open_root(home, _RESTART_TOML, sandbox=params.sandbox) as root:
            out: list[float] = []
            async with Synapse.grow("fresh", socket_dir=root.paths.socket_dir) as syn:
                await syn.fire(Add(n=1))
                for _ in range(params.restarts):
                    instance = root.slots["fresh"].instance
                    assert instance is not None
                    t0 = time.monotonic()
                    root.backend.kill(instance.cell_id, as_crash=True)
                    with trio.fail_after(_TIMEOUT):
                        while True:
                            try:
                                await syn.fire(Add(n=1))
                                break
                            except CellUnavailable:
                                continue  # the dead connection; the retry waits in the backlog
                    out.append((time.monotonic() - t0) * 1000.0)
            return out
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run_swap_bench(
    params: SwapParams, *, say: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    """Run every measurement; return the JSON document ``--json`` prints."""

    async def run() -> dict[str, Any]:
        say(f"cellmesh bench swap: sandbox {params.sandbox}, {params.callers} callers")
        small = await _run(params, params.swaps, 0, say)
        big = await _run(params, params.big_swaps, _BLOB, say) if params.big_swaps else None
        replicated = (await _run(params, params.replicated_swaps, 0, say, replicated=True)
                      if params.replicated_swaps else None)
        restarts = await _restarts(params)
        say(f"  {params.restarts} restarts (standby = false): done")
        return {"small": small, "big": big, "replicated": replicated, "restart_ms": restarts}

    results = trio.run(run)
    small = results["small"]
    restart = median(results["restart_ms"])
    measured = {
        "failed_calls": small["failed"] + (results["big"] or {}).get("failed", 0)
        + (results["replicated"] or {}).get("failed", 0),
        "serving_median_ms": small["serving_median_ms"],
        "slowest_during_swap_ms": max(
            x for x in (small.get("slowest_during_swap_ms"),
                        (results["big"] or {}).get("slowest_during_swap_ms")) if x is not None
        ),
    }
    return {
        "bench": "swap",
        "params": attrs.asdict(params),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "runs": {"small_state": small, "ten_mib_state": results["big"],
                 "replicated_3": results["replicated"]},
        "baseline": {
            "name": "restart of a standby = false cell after kill -9 (a new process)",
            "median_ms": restart, "samples_ms": results["restart_ms"],
            "serving_ratio": (small["serving_median_ms"] / restart
                              if small["serving_median_ms"] else None),
        },
        "targets": [
            {"name": name, "limit": limit, "unit": unit, "measured": measured[name],
             "met": measured[name] is not None and measured[name] <= limit}
            for name, limit, unit in TARGETS
        ],
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def format_report(doc: dict[str, Any]) -> str:
    """The human-readable table of a :func:`run_swap_bench` document."""
    p = doc["params"]
    lines = [
        f"cellmesh bench swap ({p['sandbox']}, {p['callers']} callers in another process, "
        f"grace {p['grace']:g} s, {p['settle']:g} s between swaps)",
        "",
        f"{'':34}{'small state':>16}{'10 MiB state':>16}{'3 replicas':>16}",
    ]
    small = doc["runs"]["small_state"]
    big = doc["runs"]["ten_mib_state"] or {}
    replicated = doc["runs"].get("replicated_3") or {}
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("swaps", lambda r: ", ".join(f"{n} {o}" for o, n in r.get("outcomes", {}).items())),
        ("state handed over", lambda r: f"{r.get('state_bytes') or 0} B"),
        ("command -> serving, median", lambda r: _ms(r.get("serving_median_ms"))),
        ("command -> serving, p90", lambda r: _ms(r.get("serving_p90_ms"))),
        ("whole swap, median", lambda r: _ms(r.get("total_median_ms"))),
        ("whole swap, max", lambda r: _ms(r.get("total_max_ms"))),
        ("no new work accepted, median", lambda r: _ms(r.get("no_new_work_median_ms"))),
        ("no new work accepted, max", lambda r: _ms(r.get("no_new_work_max_ms"))),
        ("slowest call during a swap", lambda r: _ms(r.get("slowest_during_swap_ms"))),
        ("steady-state p99 (same run)", lambda r: _ms(r.get("steady_p99_ms"))),
        ("calls made / failed", lambda r: f"{r.get('calls', '-')} / {r.get('failed', '-')}"),
    ]
    for title, cell in rows:
        lines.append(f"{title:34}{cell(small):>16}{cell(big) if big else '-':>16}"
                     f"{cell(replicated) if replicated else '-':>16}")
    base = doc["baseline"]
    ratio = base["serving_ratio"]
    lines += [
        "",
        f"baseline: {base['name']}: median {_ms(base['median_ms'])}; "
        f"swap -> serving / baseline = {'-' if ratio is None else f'{ratio:.2f}x'}",
    ]
    slow, p99 = small.get("slowest_during_swap_ms"), small.get("steady_p99_ms")
    if slow and p99:
        lines.append(f"slowest call during a swap / steady-state p99 = {slow / p99:.1f}x")
    rslow, rp99 = replicated.get("slowest_during_swap_ms"), replicated.get("steady_p99_ms")
    if rslow and rp99:
        lines.append(f"3 replicas: slowest call during a swap / steady-state p99 = "
                     f"{rslow / rp99:.1f}x (whole swap: every replica restarted and caught up)")
    met = [t for t in doc["targets"] if t["met"]]
    lines.append(f"targets met: {len(met)}/{len(doc['targets'])}")
    for t in doc["targets"]:
        mark = "ok" if t["met"] else "MISSED"
        value = t["measured"]
        measured = ("-" if value is None else str(value) if isinstance(value, int)
                    else f"{value:.1f}")
        lines.append(f"  {t['name']} <= {t['limit']} {t['unit']}: {measured} ({mark})")
    return "\n".join(lines)


def main(
    *, json_output: bool = False, quick: bool = False, sandbox: str | None = None,
    out: IO[str] | None = None,
) -> int:
    """``cellmesh bench swap``: run, print the table (or the JSON document)."""
    out = out if out is not None else sys.stdout
    if sandbox is None:
        path = find_bwrap()
        sandbox = "bwrap" if path is not None and probe_bwrap(path) is None else "host"
    params = attrs.evolve(QUICK if quick else SwapParams(), sandbox=sandbox)

    def say(text: str) -> None:
        if not json_output:
            print(text, file=sys.stderr, flush=True)

    doc = run_swap_bench(params, say=say)
    out.write((json.dumps(doc, indent=2) if json_output else format_report(doc)) + "\n")
    return 0

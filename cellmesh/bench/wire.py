"""``cellmesh bench wire``: the wire layer measured against raw baselines in one run.

Theory of operation
-------------------
Every measurement -- cellmesh's and each raw baseline's -- is a pair of
processes: a server (:mod:`cellmesh.bench.wire_server`) and a client worker
(:mod:`cellmesh.bench.wire_client`), so on a 2-core machine each side gets a
core and all comparisons pay the same process and scheduling costs. This
orchestrator starts every pair once, then runs ``rounds`` rounds; in each round
it asks each client in turn for one measured round (new connection, warm-up,
timed part). Measurements that are compared with each other run back to back,
and their order flips every round (A B, then B A, ...), so slow drift on a
shared, noisy machine hits both sides alike. While one pair runs, every other
process is blocked in ``accept``/``read`` and uses no CPU.

Results: throughput is the median across rounds; round-trip times are pooled
across rounds and reported as median and p99 of all samples; bulk transfer
time is the median of all transfers. Ratios are computed from those numbers;
the same ratio is also computed per round (the two sides ran back to back) and
its range shown, which says how much to trust it on a noisy machine. CPU time
per operation of each process (from ``/proc/<pid>/task/*/schedstat``, whole
round including warm-up) says which side is the bottleneck. The orchestrator
itself uses only :mod:`subprocess`; it measures nothing in-process.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, Final

import attrs

from ._params import FULL, QUICK, WireParams
from ._stats import median, percentile

__all__ = ["Spec", "SPECS", "format_report", "main", "run_wire_bench"]

MiB: Final = 1 << 20


@attrs.frozen(kw_only=True)
class Spec:
    """One measurement: which server and client kinds, and what its numbers mean."""

    name: str
    server: str
    side: str  # "cellmesh", "baseline" or "reference" (optional pyzmq)
    shape: str  # "rtt", "rate" or "bulk"
    describe: str


SPECS: Final[tuple[Spec, ...]] = (
    Spec(
        name="unix_pingpong",
        server="raw-unix-pingpong",
        side="baseline",
        shape="rtt",
        describe="raw blocking AF_UNIX ping-pong, 8 B, sendall/recv",
    ),
    Spec(
        name="trio_pingpong",
        server="raw-trio-pingpong",
        side="baseline",
        shape="rtt",
        describe="raw Trio socket ping-pong, length-prefixed cbor2 frames",
    ),
    Spec(
        name="cm_rtt",
        server="cellmesh",
        side="cellmesh",
        shape="rtt",
        describe="cellmesh Synapse.fire(Ping), one call outstanding",
    ),
    Spec(
        name="raw_pipeline",
        server="raw-pipeline",
        side="baseline",
        shape="rate",
        describe="raw blocking pipelined req/reply, one cbor2 frame per msg, window 1024",
    ),
    Spec(
        name="cm_pipeline",
        server="cellmesh",
        side="cellmesh",
        shape="rate",
        describe="cellmesh fire_many, batches of 1024, 2 batches in flight",
    ),
    Spec(
        name="raw_oneway",
        server="raw-oneway",
        side="baseline",
        shape="rate",
        describe="raw blocking one-way cbor2 stream, count acked at the end",
    ),
    Spec(
        name="cm_signal",
        server="cellmesh",
        side="cellmesh",
        shape="rate",
        describe="cellmesh signals, then one fire(Count) that returns the count",
    ),
    Spec(
        name="zmq_pipeline",
        server="zmq",
        side="reference",
        shape="rate",
        describe="pyzmq DEALER/ROUTER over ipc://, one cbor2 body per msg, window 1024",
    ),
    Spec(
        name="zmq_oneway",
        server="zmq",
        side="reference",
        shape="rate",
        describe="pyzmq DEALER->ROUTER one-way over ipc://, one cbor2 body per msg",
    ),
    Spec(
        name="cm_inline",
        server="cellmesh-inline",
        side="cellmesh",
        shape="bulk",
        describe="cellmesh fire(Blob) with the payload inline (vesicles disabled)",
    ),
    Spec(
        name="cm_vesicle",
        server="cellmesh",
        side="cellmesh",
        shape="bulk",
        describe="cellmesh fire(Blob) with the payload in a vesicle (sealed memfd)",
    ),
    Spec(
        name="raw_bulk",
        server="raw-bulk",
        side="baseline",
        shape="bulk",
        describe="raw blocking sendall of the payload over AF_UNIX, 1-byte ack",
    ),
)

GROUPS: Final[tuple[tuple[str, ...], ...]] = (
    ("trio_pingpong", "cm_rtt", "unix_pingpong"),
    ("raw_pipeline", "cm_pipeline", "zmq_pipeline"),
    ("raw_oneway", "cm_signal", "zmq_oneway"),
    ("cm_inline", "cm_vesicle", "raw_bulk"),
)
"""Measurements compared with each other run back to back; order flips every round."""


@attrs.frozen(kw_only=True)
class Target:
    """One compared metric: cellmesh vs a baseline, and the ratio it must reach."""

    metric: str
    cellmesh: str
    baseline: str
    stat: str  # key into a measurement summary
    higher_is_better: bool
    target: float | None  # the ratio to reach (as a speed-up / slowdown factor)
    ratio_kind: str  # "x" = cellmesh/baseline, "speedup" = baseline/cellmesh


TARGETS: Final[tuple[Target, ...]] = (
    Target(
        metric="RTT median, 1 outstanding call",
        cellmesh="cm_rtt",
        baseline="trio_pingpong",
        stat="median_us",
        higher_is_better=False,
        target=1.25,
        ratio_kind="x",
    ),
    Target(
        metric="RTT p99, 1 outstanding call",
        cellmesh="cm_rtt",
        baseline="trio_pingpong",
        stat="p99_us",
        higher_is_better=False,
        target=None,
        ratio_kind="x",
    ),
    Target(
        metric="pipelined request/reply",
        cellmesh="cm_pipeline",
        baseline="raw_pipeline",
        stat="msgs_per_s",
        higher_is_better=True,
        target=1.5,
        ratio_kind="x",
    ),
    Target(
        metric="one-way signals",
        cellmesh="cm_signal",
        baseline="raw_oneway",
        stat="msgs_per_s",
        higher_is_better=True,
        target=1.5,
        ratio_kind="x",
    ),
    Target(
        metric="{size} transfer: vesicle vs inline",
        cellmesh="cm_vesicle",
        baseline="cm_inline",
        stat="median_ms",
        higher_is_better=False,
        target=10.0,
        ratio_kind="speedup",
    ),
    Target(
        metric="(floor) RTT median vs blocking 8 B",
        cellmesh="cm_rtt",
        baseline="unix_pingpong",
        stat="median_us",
        higher_is_better=False,
        target=None,
        ratio_kind="x",
    ),
    Target(
        metric="(ref) pipelined vs pyzmq DEALER/ROUTER",
        cellmesh="cm_pipeline",
        baseline="zmq_pipeline",
        stat="msgs_per_s",
        higher_is_better=True,
        target=None,
        ratio_kind="x",
    ),
    Target(
        metric="(ref) signals vs pyzmq one-way",
        cellmesh="cm_signal",
        baseline="zmq_oneway",
        stat="msgs_per_s",
        higher_is_better=True,
        target=None,
        ratio_kind="x",
    ),
    Target(
        metric="(floor) {size} vesicle vs raw sendall",
        cellmesh="cm_vesicle",
        baseline="raw_bulk",
        stat="median_ms",
        higher_is_better=False,
        target=None,
        ratio_kind="speedup",
    ),
)

_READY_TIMEOUT: Final = 60.0


# --------------------------------------------------------------------------
# Worker processes.


@attrs.define(eq=False)
class _Worker:
    """A child process spoken to by lines on stdin/stdout; its stderr goes to a file."""

    _proc: subprocess.Popen[bytes]
    _stderr_path: Path

    @classmethod
    def start(cls, argv: Sequence[str], stderr_path: Path) -> _Worker:
        with stderr_path.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, *argv],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        return cls(proc, stderr_path)

    def cpu_ns(self) -> int:
        """CPU time (ns) the process has used so far: sum of its threads' schedstat."""
        total = 0
        task_dir = Path(f"/proc/{self._proc.pid}/task")
        try:
            tasks = list(task_dir.iterdir())
        except OSError:
            return 0
        for task in tasks:
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int((task / "schedstat").read_text().split()[0])
        return total

    def send(self, line: str) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(line.encode() + b"\n")
        self._proc.stdin.flush()

    def receive(self, timeout: float) -> str:
        """Return the next stdout line; raise ``RuntimeError`` on EOF or timeout."""
        out = self._proc.stdout
        assert out is not None
        ready, _, _ = select.select([out], [], [], timeout)
        if not ready:
            raise RuntimeError(f"no answer within {timeout:.0f} s{self._stderr_tail()}")
        line = out.readline()
        if not line:
            code = self._proc.wait(5)
            raise RuntimeError(f"process exited with code {code}{self._stderr_tail()}")
        return line.decode().strip()

    def _stderr_tail(self) -> str:
        try:
            text = self._stderr_path.read_text(errors="replace").strip()
        except OSError:
            return ""
        return f"; stderr:\n{text[-2000:]}" if text else ""

    def stop(self) -> None:
        """Close stdin (the worker exits at EOF); kill it if it lingers."""
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


# --------------------------------------------------------------------------
# Running.


def _git_revision() -> str:
    """``<short sha>`` of the checkout cellmesh runs from, ``+dirty`` if cellmesh/ has edits."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "cellmesh"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"
    return sha + ("+dirty" if dirty else "")


def _host_facts() -> dict[str, Any]:
    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    return {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "loadavg_start": list(os.getloadavg()),
        "cbor2": version("cbor2"),
        "trio": version("trio"),
        "cellmesh": version("cellmesh"),
        "cellmesh_git": _git_revision(),
    }


def cellmesh_unavailable() -> str | None:
    """Return why the cellmesh side cannot run, or ``None`` if it can."""
    try:
        from . import _cellmesh
    except (ImportError, AttributeError) as exc:  # the wire layer is missing or incomplete
        return f"cellmesh wire layer not importable: {exc}"
    return _cellmesh.unavailable_reason()


def _zmq_unavailable() -> str | None:
    from ._zmq import zmq_unavailable

    return zmq_unavailable()


def run_wire_bench(
    params: WireParams,
    *,
    include_cellmesh: bool = True,
    include_reference: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every measurement for ``params.rounds`` interleaved rounds; return the report.

    The report is a JSON-ready dict: ``host``, ``params``, ``measurements``
    (per measurement: its description, per-round raw results summarised, the
    pooled summary, or an ``error``) and ``comparisons`` (the ratio table).
    Nothing here asserts speed; a failed measurement is reported, not raised.
    """
    say = progress or (lambda _msg: None)
    host = _host_facts()
    skip = {
        "baseline": None,
        "cellmesh": cellmesh_unavailable() if include_cellmesh else "excluded by the caller",
        "reference": _zmq_unavailable() if include_reference else "excluded by the caller",
    }
    specs = [s for s in SPECS if skip[s.side] is None]
    rounds: dict[str, list[dict[str, Any]]] = {s.name: [] for s in specs}
    errors: dict[str, str] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cmbench-") as tmp:
        tmpdir = Path(tmp)
        servers: dict[str, _Worker] = {}
        clients: dict[str, _Worker] = {}
        try:
            for spec in specs:
                sock = str(tmpdir / f"{spec.name}.sock")
                servers[spec.name] = _Worker.start(
                    ["-m", "cellmesh.bench.wire_server", spec.server, sock],
                    tmpdir / f"{spec.name}.server.err",
                )
            for spec in specs:
                try:
                    line = servers[spec.name].receive(_READY_TIMEOUT)
                except RuntimeError as exc:
                    line = str(exc)
                if line != "READY":
                    errors[spec.name] = f"server did not start: {line}"
                    continue
                clients[spec.name] = _Worker.start(
                    [
                        "-m",
                        "cellmesh.bench.wire_client",
                        spec.name,
                        str(tmpdir / f"{spec.name}.sock"),
                        params.to_json(),
                    ],
                    tmpdir / f"{spec.name}.client.err",
                )
            say(f"started {len(servers) + len(clients)} worker processes")
            for r in range(params.rounds):
                t_round = time.monotonic()
                for group in GROUPS:
                    order = group if r % 2 == 0 else tuple(reversed(group))
                    for name in order:
                        if name not in clients or name in errors:
                            continue
                        client, server = clients[name], servers[name]
                        cpu0 = (client.cpu_ns(), server.cpu_ns())
                        try:
                            client.send("run")
                            result = json.loads(client.receive(params.round_timeout))
                        except (RuntimeError, OSError, ValueError) as exc:
                            result = {"error": str(exc)}
                        if "error" in result:
                            errors[name] = str(result["error"])
                            continue
                        result["client_cpu_ns"] = client.cpu_ns() - cpu0[0]
                        result["server_cpu_ns"] = server.cpu_ns() - cpu0[1]
                        rounds[name].append(result)
                say(f"round {r + 1}/{params.rounds} done in {time.monotonic() - t_round:.1f} s")
        finally:
            for worker in [*clients.values(), *servers.values()]:
                worker.stop()
    host["loadavg_end"] = list(os.getloadavg())
    host["elapsed_s"] = round(time.monotonic() - started, 1)
    measurements: dict[str, Any] = {}
    for spec in SPECS:
        entry: dict[str, Any] = {"describe": spec.describe, "side": spec.side, "shape": spec.shape}
        if spec.name not in rounds:
            entry["skipped"] = skip[spec.side]
        elif spec.name in errors:
            entry["error"] = errors[spec.name]
        elif rounds[spec.name]:
            entry.update(summarize(spec.shape, rounds[spec.name]))
            entry.update(_cpu_per_op(spec.shape, rounds[spec.name], params))
        else:
            entry["error"] = "no rounds ran"
        measurements[spec.name] = entry
    return {
        "host": host,
        "params": attrs.asdict(params),
        "cellmesh_skipped": skip["cellmesh"],
        "reference_skipped": skip["reference"],
        "measurements": measurements,
        "comparisons": compare(measurements, params.bulk_bytes),
    }


# --------------------------------------------------------------------------
# Summaries, ratios, formatting.


def summarize(shape: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Summarise one measurement's per-round raw results (see :mod:`.wire_client`)."""
    if shape == "rtt":
        pooled = [ns / 1000.0 for res in results for ns in res["rtt_ns"]]
        return {
            "samples": len(pooled),
            "median_us": median(pooled),
            "p99_us": percentile(pooled, 99),
            "min_us": min(pooled),
            "round_medians_us": [median([ns / 1000.0 for ns in res["rtt_ns"]]) for res in results],
            "round_p99_us": [
                percentile([ns / 1000.0 for ns in res["rtt_ns"]], 99) for res in results
            ],
        }
    if shape == "rate":
        rates = [res["msgs"] / res["seconds"] for res in results]
        return {
            "msgs_per_round": results[0]["msgs"],
            "msgs_per_s": median(rates),
            "round_msgs_per_s": rates,
        }
    times = [t for res in results for t in res["seconds"]]
    size = results[0]["bytes"]
    med = median(times)
    return {
        "bytes": size,
        "transfers": len(times),
        "median_ms": med * 1000.0,
        "mib_per_s": size / MiB / med,
        "all_ms": [t * 1000.0 for t in times],
        "round_median_ms": [median(res["seconds"]) * 1000.0 for res in results],
    }


def _cpu_per_op(shape: str, results: list[dict[str, Any]], p: WireParams) -> dict[str, Any]:
    """CPU microseconds per operation, client and server, median across rounds.

    Measured over the whole round (connect, warm-up, timed part) and divided by
    all operations of the round, warm-up included; an operation is one call,
    one message, or one bulk transfer.
    """
    if shape == "rtt":
        ops = p.rtt_samples + p.rtt_warmup
    elif shape == "rate":
        ops = results[0]["msgs"] + p.warmup_msgs
    else:
        ops = p.bulk_transfers + p.bulk_warmup
    return {
        "ops_per_round": ops,
        "client_cpu_us_per_op": median([r["client_cpu_ns"] / 1000.0 / ops for r in results]),
        "server_cpu_us_per_op": median([r["server_cpu_ns"] / 1000.0 / ops for r in results]),
    }


def compare(measurements: dict[str, Any], bulk_bytes: int) -> list[dict[str, Any]]:
    """Compute each :data:`TARGETS` row from the measurement summaries."""
    size = f"{bulk_bytes / MiB:g} MiB"
    rows: list[dict[str, Any]] = []
    for t in TARGETS:
        cm = measurements.get(t.cellmesh, {}).get(t.stat)
        base = measurements.get(t.baseline, {}).get(t.stat)
        ratio: float | None = None
        of_medians: float | None = None
        met: bool | None = None
        paired: list[float] = []
        if cm is not None and base is not None and cm > 0 and base > 0:
            of_medians = _ratio(t, cm, base)
            per_round = _ROUND_KEYS[t.stat]
            paired = [
                _ratio(t, c, b)
                for c, b in zip(
                    measurements[t.cellmesh][per_round],
                    measurements[t.baseline][per_round],
                    strict=False,
                )
            ]
            # The headline ratio pairs each cellmesh round with the baseline
            # round that ran right next to it, so drift in machine load
            # cancels; the ratio of the two medians is kept alongside.
            ratio = median(paired) if paired else of_medians
            if t.target is not None:
                if t.ratio_kind == "speedup" or t.higher_is_better:
                    met = ratio >= t.target
                else:
                    met = ratio <= t.target
        rows.append(
            {
                "metric": t.metric.format(size=size),
                "cellmesh": t.cellmesh,
                "baseline": t.baseline,
                "stat": t.stat,
                "cellmesh_value": cm,
                "baseline_value": base,
                "ratio": ratio,
                "ratio_of_medians": of_medians,
                "ratio_kind": t.ratio_kind,
                "round_ratios": paired,
                "target": t.target,
                "target_text": _target_text(t),
                "met": met,
            }
        )
    return rows


_ROUND_KEYS: Final = {
    "median_us": "round_medians_us",
    "p99_us": "round_p99_us",
    "msgs_per_s": "round_msgs_per_s",
    "median_ms": "round_median_ms",
}


def _ratio(t: Target, cm: float, base: float) -> float:
    return base / cm if t.ratio_kind == "speedup" else cm / base


def _target_text(t: Target) -> str:
    if t.target is None:
        return "-"
    if t.ratio_kind == "speedup":
        return f">= {t.target:g}x faster"
    return f"{'>=' if t.higher_is_better else '<='} {t.target:g}x"


def _fmt_value(m: dict[str, Any], stat: str) -> str:
    if "skipped" in m:
        return "n/a"
    if "error" in m:
        return "FAILED"
    v = m.get(stat)
    if v is None:
        return "n/a"
    if stat.endswith("_us"):
        return f"{v:,.1f} us"
    if stat == "msgs_per_s":
        return f"{v:,.0f} msg/s"
    if stat == "median_ms":
        return f"{v:,.1f} ms ({m['mib_per_s']:,.0f} MiB/s)"
    return f"{v:g}"


def _fmt_ratio(row: dict[str, Any], key: str = "ratio") -> str:
    r = row[key]
    if r is None:
        return "-"
    if row["ratio_kind"] != "speedup":
        return f"{r:.2f}x"
    return f"{r:.2f}x faster" if r >= 1.0 else f"{1.0 / r:.2f}x slower"


def _fmt_range(ratios: Sequence[float]) -> str:
    if not ratios:
        return "-"
    return f"{min(ratios):.2f}-{max(ratios):.2f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(header), "-+-".join("-" * w for w in widths), *(line(r) for r in rows)]


def format_report(report: dict[str, Any]) -> str:
    """Render a report from :func:`run_wire_bench` as the human-readable table."""
    h = report["host"]
    p = report["params"]
    ms = report["measurements"]
    out = [
        f"cellmesh bench wire -- {h['date']} -- Python {h['python']} ({h['implementation']}) -- "
        f"{h['cpu_count']} CPUs ({h['cpus_usable']} usable) -- {h['platform']}",
        f"cbor2 {h['cbor2']}, trio {h['trio']}, cellmesh {h['cellmesh']} ({h['cellmesh_git']}); "
        f"{p['rounds']} interleaved rounds, {h['elapsed_s']} s; "
        f"load avg {h['loadavg_start'][0]:.2f} -> {h['loadavg_end'][0]:.2f}",
        "each measurement: client and server in separate processes over AF_UNIX",
        "",
    ]
    rows = []
    for row in report["comparisons"]:
        met = {True: "yes", False: "NO", None: "-"}[row["met"]]
        rows.append(
            [
                row["metric"],
                _fmt_value(ms[row["cellmesh"]], row["stat"]),
                _fmt_value(ms[row["baseline"]], row["stat"]),
                row["baseline"],
                _fmt_ratio(row),
                _fmt_range(row["round_ratios"]),
                _fmt_ratio(row, "ratio_of_medians"),
                row["target_text"],
                met,
            ]
        )
    out += _table(
        [
            "metric",
            "cellmesh",
            "baseline",
            "baseline is",
            "ratio",
            "per round",
            "of medians",
            "target",
            "met?",
        ],
        rows,
    )
    targeted = [r for r in report["comparisons"] if r["target"] is not None]
    met_count = sum(1 for r in targeted if r["met"])
    out.append("")
    out.append(f"targets met: {met_count}/{len(targeted)}")
    out.append(
        "ratio = cellmesh/baseline ('x faster' = baseline time / cellmesh time), the median over"
        " rounds of the ratio within each round (the two ran back to back, so load drift"
        " cancels);\nper round = its min-max; of medians = the ratio of the two value columns"
    )
    if report["cellmesh_skipped"]:
        out.append(f"cellmesh side skipped: {report['cellmesh_skipped']}")
    if report["reference_skipped"]:
        out.append(f"pyzmq reference skipped: {report['reference_skipped']}")
    out.append("")
    out.append("measurements (per-round values; RTT = per-round medians):")
    for name, m in ms.items():
        if "skipped" in m:
            detail = "skipped"
        elif "error" in m:
            detail = "FAILED: " + m["error"].strip().splitlines()[-1][:200]
        elif m["shape"] == "rtt":
            detail = (
                f"median {m['median_us']:.1f} us, p99 {m['p99_us']:.1f} us, min {m['min_us']:.1f}"
                f" us over {m['samples']} samples; rounds: "
                + " ".join(f"{v:.1f}" for v in m["round_medians_us"])
            )
        elif m["shape"] == "rate":
            detail = (
                f"{m['msgs_per_s']:,.0f} msg/s median of {m['msgs_per_round']} msgs x rounds: "
                + " ".join(f"{v / 1000:.0f}k" for v in m["round_msgs_per_s"])
            )
        else:
            detail = (
                f"{m['median_ms']:.1f} ms = {m['mib_per_s']:,.0f} MiB/s for {m['bytes'] / MiB:g}"
                " MiB; transfers (ms): " + " ".join(f"{v:.1f}" for v in m["all_ms"])
            )
        out.append(f"  {name:<14} {m['describe']}")
        out.append(f"  {'':<14}   {detail}")
        if "client_cpu_us_per_op" in m:
            unit = {"rtt": "call", "rate": "msg", "bulk": "transfer"}[m["shape"]]
            out.append(
                f"  {'':<14}   CPU per {unit}: client {m['client_cpu_us_per_op']:,.1f} us,"
                f" server {m['server_cpu_us_per_op']:,.1f} us"
            )
    return "\n".join(out) + "\n"


def main(*, json_output: bool = False, quick: bool = False, out: IO[str] | None = None) -> int:
    """Run the benchmark (full or ``quick``) and print the table or, with ``json_output``, JSON."""
    stream = out if out is not None else sys.stdout
    params = QUICK if quick else FULL

    def progress(msg: str) -> None:
        sys.stderr.write(f"[bench wire] {msg}\n")
        sys.stderr.flush()

    report = run_wire_bench(params, progress=progress)
    if json_output:
        stream.write(json.dumps(report, indent=2) + "\n")
    else:
        stream.write(format_report(report))
    return 0

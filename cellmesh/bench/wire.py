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
time is the median of all transfers (see :mod:`._report`). Ratios are computed from those numbers;
the same ratio is also computed per round (the two sides ran back to back) and
its range shown, which says how much to trust it on a noisy machine. CPU time
per operation of each process (from ``/proc/<pid>/task/*/schedstat``, whole
round including warm-up) says which side is the bottleneck. The orchestrator
itself uses only :mod:`subprocess`; it measures nothing in-process.

The natural patterns (N tasks each ``await syn.fire(msg)``, ``signal`` and
``signal_nowait`` in a loop) are compared with the two Trio floors measured
in the same run (:mod:`._floors`: the wake-up floor and the checkpoint floor,
no I/O, in the client worker) and with the raw baselines. After the rounds,
:data:`PROFILED` measurements run once more with both processes under the
sampling profiler (:mod:`._profile`); the report splits each side's CPU per
message into encode / syscalls / scheduling / dispatch.
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
from ._report import compare, cpu_per_op, format_report, profile_table, summarize

__all__ = ["Spec", "SPECS", "format_report", "main", "run_wire_bench"]


@attrs.frozen(kw_only=True)
class Spec:
    """One measurement: which server and client kinds, and what its numbers mean."""

    name: str
    server: str
    side: str  # "cellmesh", "baseline", "floor" (Trio, in-process) or "reference" (pyzmq)
    shape: str  # "rtt", "rate" or "bulk"
    describe: str
    #: The client's round (a kind of :mod:`.wire_client`); default: ``name``.
    client: str = ""
    #: Environment set for both processes of this measurement (on top of ours).
    env: tuple[tuple[str, str], ...] = ()

    @property
    def client_kind(self) -> str:
        """The client round this measurement runs."""
        return self.client or self.name


SPECS: Final[tuple[Spec, ...]] = (
    Spec(
        name="floor_wake16",
        server="none",
        side="floor",
        shape="rate",
        describe="Trio wake-up floor: 16 parked tasks woken in batches by one task, no I/O",
    ),
    Spec(
        name="cm_fire16",
        server="cellmesh",
        side="cellmesh",
        shape="rate",
        describe="cellmesh: 16 tasks, each `await syn.fire(Ping)` in a loop",
    ),
    Spec(
        name="cm_fire16_nospin",
        server="cellmesh",
        side="cellmesh",
        shape="rate",
        describe="cm_fire16 with spinning off in both processes (CELL_SPIN_US=0)",
        client="cm_fire16",
        env=(("CELL_SPIN_US", "0"),),
    ),
    Spec(
        name="floor_wake256",
        server="none",
        side="floor",
        shape="rate",
        describe="Trio wake-up floor: 256 parked tasks woken in batches by one task, no I/O",
    ),
    Spec(
        name="cm_fire256",
        server="cellmesh",
        side="cellmesh",
        shape="rate",
        describe="cellmesh: 256 tasks, each `await syn.fire(Ping)` in a loop",
    ),
    Spec(
        name="cm_fire256_await",
        server="cellmesh",
        side="cellmesh",
        shape="rate",
        describe="cellmesh: 256 tasks, each `await syn.fire(Nap)` in a loop; the handler "
        "awaits once before it answers",
    ),
    Spec(
        name="floor_checkpoint",
        server="none",
        side="floor",
        shape="rate",
        describe="Trio checkpoint floor: a loop of `await trio.lowlevel.checkpoint()`",
    ),
    Spec(
        name="cm_signal_loop",
        server="cellmesh",
        side="cellmesh",
        shape="rate",
        describe="cellmesh: `await syn.signal(Tick)` in a loop, then fire(Count)",
    ),
    Spec(
        name="cm_signal_nowait",
        server="cellmesh",
        side="cellmesh",
        shape="rate",
        describe="cellmesh: `syn.signal_nowait(Tick)` in a loop (await signal on WouldBlock)",
    ),
    Spec(
        name="cm_pipeline_rec",
        server="cellmesh",
        side="cellmesh",
        shape="rate",
        describe="cellmesh fire_many of Rec(int, 16-byte bytes, str), batches of 1024, echoed",
    ),
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
        name="cm_rtt_nospin",
        server="cellmesh",
        side="cellmesh",
        shape="rtt",
        describe="cm_rtt with spinning off in both processes (CELL_SPIN_US=0)",
        client="cm_rtt",
        env=(("CELL_SPIN_US", "0"),),
    ),
    Spec(
        name="raw_pipeline",
        server="raw-pipeline",
        side="baseline",
        shape="rate",
        describe="raw blocking pipelined req/reply, one cbor2 frame per msg, 128 frames per "
        "sendall, window 1024; server: one sendall per received chunk",
    ),
    Spec(
        name="raw_window16",
        server="raw-pipeline",
        side="baseline",
        shape="rate",
        describe="raw_pipeline with 16 calls in flight (as 16 tasks x fire), refilled 8 "
        "at a time",
    ),
    Spec(
        name="raw_window256",
        server="raw-pipeline",
        side="baseline",
        shape="rate",
        describe="raw_pipeline with 256 calls in flight (as 256 tasks x fire), refilled 128 "
        "at a time",
    ),
    Spec(
        name="raw_pipeline_rec",
        server="raw-pipeline",
        side="baseline",
        shape="rate",
        describe="raw_pipeline with Rec's fields (an int, 16 bytes, a str) in each call, "
        "echoed",
    ),
    Spec(
        name="cm_pipeline",
        server="cellmesh",
        side="cellmesh",
        shape="rate",
        describe="cellmesh fire_many(Ping), batches of 1024, 2 batches in flight",
    ),
    Spec(
        name="raw_oneway",
        server="raw-oneway",
        side="baseline",
        shape="rate",
        describe="raw blocking one-way cbor2 stream, 1024 frames per sendall, count acked",
    ),
    Spec(
        name="cm_signal",
        server="cellmesh",
        side="cellmesh",
        shape="rate",
        describe="cellmesh signal_many(Tick), batches of 1024, then fire(Count)",
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
    ("floor_wake16", "cm_fire16", "raw_window16", "cm_fire16_nospin", "floor_wake256",
     "cm_fire256", "cm_fire256_await", "raw_window256", "raw_pipeline"),
    ("floor_checkpoint", "cm_signal_loop", "raw_oneway", "cm_signal_nowait"),
    ("cm_pipeline_rec", "raw_pipeline_rec", "cm_pipeline", "zmq_pipeline", "cm_signal",
     "zmq_oneway"),
    ("trio_pingpong", "cm_rtt", "cm_rtt_nospin", "unix_pingpong"),
    ("cm_inline", "cm_vesicle", "raw_bulk"),
)
"""Measurements compared with each other run back to back; order flips every round."""

#: Measurements profiled once after the rounds (client and cell), for the profile section.
PROFILED: Final = ("cm_fire16", "cm_fire256", "cm_signal_loop", "cm_signal_nowait",
                   "cm_pipeline_rec", "cm_rtt")


_READY_TIMEOUT: Final = 60.0


# --------------------------------------------------------------------------
# Worker processes.


@attrs.define(eq=False)
class _Worker:
    """A child process spoken to by lines on stdin/stdout; its stderr goes to a file."""

    _proc: subprocess.Popen[bytes]
    _stderr_path: Path

    @classmethod
    def start(
        cls, argv: Sequence[str], stderr_path: Path, env: Sequence[tuple[str, str]] = ()
    ) -> _Worker:
        with stderr_path.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, *argv],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env={**os.environ, **dict(env)} if env else None,
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
    profile: bool = True,
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
        "floor": None,
        "cellmesh": cellmesh_unavailable() if include_cellmesh else "excluded by the caller",
        "reference": _zmq_unavailable() if include_reference else "excluded by the caller",
    }
    specs = [s for s in SPECS if skip[s.side] is None]
    rounds: dict[str, list[dict[str, Any]]] = {s.name: [] for s in specs}
    errors: dict[str, str] = {}
    profiles: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cmbench-") as tmp:
        tmpdir = Path(tmp)
        servers: dict[str, _Worker] = {}
        clients: dict[str, _Worker] = {}
        try:
            for spec in specs:
                if spec.server == "none":  # a floor: measured inside the client process
                    continue
                sock = str(tmpdir / f"{spec.name}.sock")
                servers[spec.name] = _Worker.start(
                    ["-m", "cellmesh.bench.wire_server", spec.server, sock],
                    tmpdir / f"{spec.name}.server.err",
                    spec.env,
                )
            for spec in specs:
                if spec.name in servers:
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
                        spec.client_kind,
                        str(tmpdir / f"{spec.name}.sock"),
                        params.to_json(),
                    ],
                    tmpdir / f"{spec.name}.client.err",
                    spec.env,
                )
            for name, client in list(clients.items()):
                try:
                    line = client.receive(_READY_TIMEOUT)
                except RuntimeError as exc:
                    line = str(exc)
                if line != "READY":
                    errors[name] = f"client did not start: {line}"
            say(f"started {len(servers) + len(clients)} worker processes")
            for r in range(params.rounds):
                t_round = time.monotonic()
                for group in GROUPS:
                    order = group if r % 2 == 0 else tuple(reversed(group))
                    for name in order:
                        if name not in clients or name in errors:
                            continue
                        client, server = clients[name], servers.get(name)
                        cpu0 = (client.cpu_ns(), server.cpu_ns() if server else 0)
                        try:
                            client.send("run")
                            result = json.loads(client.receive(params.round_timeout))
                        except (RuntimeError, OSError, ValueError) as exc:
                            result = {"error": str(exc)}
                        if "error" in result:
                            errors[name] = str(result["error"])
                            continue
                        result["client_cpu_ns"] = client.cpu_ns() - cpu0[0]
                        result["server_cpu_ns"] = (server.cpu_ns() if server else 0) - cpu0[1]
                        rounds[name].append(result)
                say(f"round {r + 1}/{params.rounds} done in {time.monotonic() - t_round:.1f} s")
            if profile:
                for name in PROFILED:
                    if name in clients and name in servers and name not in errors:
                        profiles[name] = _profile_round(clients[name], servers[name], params)
                say(f"profiled {len(profiles)} measurements")
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
            entry.update(cpu_per_op(spec.shape, rounds[spec.name], params))
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
        "profile": profile_table(profiles, measurements),
    }


def _profile_round(client: _Worker, server: _Worker, params: WireParams) -> dict[str, Any]:
    """One more round of a measurement with both processes under the sampling profiler."""
    try:
        server.send("profile start")
        client.send("profile")
        result = json.loads(client.receive(params.round_timeout))
        server.send("profile stop")
        cell = json.loads(server.receive(_READY_TIMEOUT))
    except (RuntimeError, OSError, ValueError) as exc:
        return {"error": str(exc)}
    if "error" in result:
        return {"error": str(result["error"])}
    return {"client": result.get("profile", {}), "cell": cell}


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

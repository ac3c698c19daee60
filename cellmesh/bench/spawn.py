"""``cellmesh bench spawn``: how soon a cell answers its first call -- cold, warm, after kill -9.

Theory of operation
-------------------
Every measurement runs a real root in this process (:func:`serve_root`) on a
private ``CELL_HOME`` under /tmp, with real cell processes under the chosen
sandbox backend (``bwrap`` and/or ``host``). The cell's code is a small module
this file writes as text (:data:`CELL_SOURCE`); its protein and ours share a
wire name, so nothing under ``tests/`` is needed.

1. **cold**: each round a fresh ``CELL_HOME`` (empty DNA cache) and a fresh
   root with one ``on_demand`` echo cell. Two numbers: connect -> first reply
   (``Synapse.grow`` + ``fire(Echo)``; the root builds the DNA entry and
   creates the sandbox when it starts, so this is activation + spawn + runtime
   import + ``on_start`` + reply), and root start -> first reply (adds the DNA
   build, the backend probe and the socket binding). The DNA build alone is
   timed on a scratch cache each round.
2. **warm**: one root with ``on_demand`` cells ``c0..cN`` sharing one DNA
   entry; each round connects to the next dormant cell (after one untimed
   warm-up cell).
3. **restart**: one root with one eager cell under ``intensity = 1000, period
   = 1``, measured twice: with the default standby (a process that already
   imported everything waits to take over; each round waits
   ``_STANDBY_SETTLE`` so it has finished importing, as in steady state) and
   with ``standby = false`` (the new process starts from scratch). t0 is just
   before ``backend.kill`` of the serving process, t1 is the
   reply to an Echo fired through a synapse that was connected before the
   kill (a call that meets the dead connection fails with ``CellUnavailable``
   and is retried: the retry waits in the listener backlog until the new
   process accepts).

The floor, measured in the same run right before every sample: a bare
``python -c`` (this interpreter) started with ``subprocess.Popen`` that
accepts one connection on an inherited listening socket and writes one byte;
timed from ``Popen`` to the byte. The headline ratio of a row is the median
over rounds of (sample / the floor sample taken right before it).

A profile says where the time goes: for each backend, ``python -c pass`` and
``python -c "import cellmesh.actors.runtime"`` spawned through the backend
itself (spawn -> exit), and the root's own share (connection seen -> spawn
returned, kill -> new process spawned). Nothing here asserts a speed.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, Final

import attrs
import trio

from ..actors.dna import DnaCache
from ..actors.root import Root
from ..config import Paths
from ..errors import CellUnavailable
from ..sandbox import CellBackend, CellSpec, WorkloadEnv, select_backend
from ..testing.mesh import mesh_env, open_root
from ..transport.synapse import Synapse
from ..wire.proteins import protein
from ._stats import median, percentile

__all__ = [
    "CELL_SOURCE",
    "Echo",
    "SANDBOXES",
    "SpawnParams",
    "TRACTOR_REPORTED_MS",
    "format_report",
    "main",
    "run_spawn_bench",
]

#: Backends the bench can measure (``--sandbox both`` = all of them).
SANDBOXES: Final = ("bwrap", "host")
#: tractor's published figure for starting one actor (not measured here).
TRACTOR_REPORTED_MS: Final = 400.0
#: Targets from the issue: (measurement, sandboxes it applies to, median ms).
TARGETS: Final = (
    ("warm", ("bwrap",), 150.0),
    ("restart", ("bwrap", "host"), 100.0),
)
_TIMEOUT: Final = 60.0
#: Before a timed crash: time for the standby to finish importing (it does
#: not report that; 0.6 s is three times the import time measured here).
_STANDBY_SETTLE: Final = 0.6
_DNA_MODULE: Final = "spawnecho"

#: The cell the bench runs (written as ``spawnecho.py`` into each CELL_HOME).
CELL_SOURCE: Final = '''\
"""The echo cell of ``cellmesh bench spawn``."""

import cellmesh


@cellmesh.protein("cellmesh.bench.spawn.Echo")
class Echo:
    n: int


class Echoer(cellmesh.Cell):
    @cellmesh.receptor
    async def echo(self, msg: Echo) -> Echo:
        return Echo(msg.n)
'''

_FLOOR_CODE: Final = (
    "import socket,sys\n"
    "s=socket.socket(fileno=int(sys.argv[1]))\n"
    "c,_=s.accept()\n"
    "c.sendall(b'x')\n"
)
_PROFILE_CODE: Final = {
    "python_pass": "pass",
    "import_trio": "import trio",
    "import_runtime": "import cellmesh.actors.runtime",
}
_PROFILE_TAIL: Final = "\nimport os\nos.write(1, b'x')\n"


@protein("cellmesh.bench.spawn.Echo")
class Echo:
    """The bench's call (and reply); the cell module declares the same wire name."""

    n: int


@attrs.frozen(kw_only=True)
class SpawnParams:
    """How many rounds of each measurement, under which sandboxes."""

    rounds: int = 30
    sandboxes: tuple[str, ...] = SANDBOXES
    profile_samples: int = 10

    def __attrs_post_init__(self) -> None:
        if self.rounds < 1 or self.profile_samples < 1:
            raise ValueError("rounds and profile_samples must be >= 1")
        unknown = set(self.sandboxes) - set(SANDBOXES)
        if unknown or not self.sandboxes:
            raise ValueError(f"sandboxes must be among {SANDBOXES}, got {self.sandboxes}")


FULL: Final = SpawnParams()
QUICK: Final = SpawnParams(rounds=8, profile_samples=4)


# --------------------------------------------------------------------------
# The floor: a bare interpreter that accepts one connection and writes a byte.


def _floor_once(tmp: Path) -> float:
    """Seconds from ``Popen`` to the byte from a bare ``python -c`` on an inherited listener."""
    path = tmp / "floor.sock"
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        listener.listen(8)
        client.connect(str(path))  # into the backlog, as a Synapse to a dormant cell
        fd = listener.fileno()
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", _FLOOR_CODE, str(fd)], pass_fds=[fd],
            stdin=subprocess.DEVNULL,
        )
        client.settimeout(_TIMEOUT)
        byte = client.recv(1)
        t1 = time.perf_counter()
        proc.wait(_TIMEOUT)
        if byte != b"x":
            raise RuntimeError(f"floor process exited with {proc.returncode} without replying")
        return t1 - t0
    finally:
        client.close()
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# --------------------------------------------------------------------------
# Roots.


def _cell_toml(name: str, **keys: str) -> str:
    extra = "".join(f"{k} = {v}\n" for k, v in keys.items())
    return f'[cells.{name}]\ndna = "{_DNA_MODULE}.py"\nentry = "{_DNA_MODULE}:Echoer"\n{extra}\n'


def _new_home() -> Path:
    home = Path(tempfile.mkdtemp(prefix="cmsp-", dir="/tmp"))  # short: socket paths <= 107 B
    (home / f"{_DNA_MODULE}.py").write_text(CELL_SOURCE)
    return home


def _open_root(
    home: Path, toml: str, sandbox: str, logs: list[str]
) -> contextlib.AbstractAsyncContextManager[Root]:
    """A root serving ``toml`` from ``home`` until the block ends (then stopped, awaited)."""
    return open_root(home, toml, sandbox=sandbox, log=logs.append)


async def _until(root: Root, name: str, predicate: Callable[[], bool]) -> None:
    with trio.fail_after(_TIMEOUT):
        while not predicate():
            await root.slots[name].changed.wait()


def _state(root: Root, name: str) -> str:
    slot = root.slots.get(name)
    if slot is None or slot.instance is None:
        return "none"
    return slot.instance.state


def _spawned_after(root: Root, name: str, wall0: float) -> float | None:
    """Seconds from ``wall0`` (``time.monotonic()``) until the root's spawn() returned."""
    instance = root.slots[name].instance
    if instance is None or instance.started_at is None:
        return None
    return max(0.0, instance.started_at - wall0)


async def _first_reply(socket_dir: Path, name: str, n: int) -> None:
    with trio.fail_after(_TIMEOUT):
        async with Synapse.grow(name, socket_dir=socket_dir) as syn:
            reply = await syn.fire(Echo(n))
    _expect_echo(name, reply, n)


def _expect_echo(name: str, reply: object, n: int) -> None:
    if reply != Echo(n):
        raise RuntimeError(f"{name} answered {reply!r}, not Echo({n})")


def _in_state(root: Root, name: str, state: str) -> bool:
    return _state(root, name) == state


def _expect_state(root: Root, name: str, state: str) -> None:
    if not _in_state(root, name, state):
        raise RuntimeError(f"{name} is {_state(root, name)}, not {state}")


# --------------------------------------------------------------------------
# The three measurements. Each returns per-round samples (seconds) by key.


Samples = dict[str, list[float]]


async def _cold(sandbox: str, rounds: int, tmp: Path, say: Callable[[str], None]) -> Samples:
    out: Samples = {"floor": [], "connect_to_reply": [], "root_to_reply": [], "dna_build": [],
                    "spawn_call": []}
    for r in range(rounds):
        out["floor"].append(_floor_once(tmp))
        home = _new_home()
        logs: list[str] = []
        try:
            scratch = home / "scratch-cache"
            t_dna = time.perf_counter()
            await trio.to_thread.run_sync(DnaCache(scratch).ensure, home / f"{_DNA_MODULE}.py")
            out["dna_build"].append(time.perf_counter() - t_dna)
            shutil.rmtree(scratch, ignore_errors=True)
            t_root = time.perf_counter()
            try:
                async with _open_root(
                    home, _cell_toml("echo", activation='"on_demand"'), sandbox, logs
                ) as root:
                    socket_dir = root.paths.socket_dir
                    wall0 = time.monotonic()
                    t0 = time.perf_counter()
                    await _first_reply(socket_dir, "echo", r)
                    t1 = time.perf_counter()
                    out["connect_to_reply"].append(t1 - t0)
                    out["root_to_reply"].append(t1 - t_root)
                    spawned = _spawned_after(root, "echo", wall0)
                    if spawned is not None:
                        out["spawn_call"].append(spawned)
            except Exception as exc:
                raise _with_logs(exc, logs) from exc
        finally:
            shutil.rmtree(home, ignore_errors=True)
        say(f"{sandbox} cold round {r + 1}/{rounds}: "
            f"{out['connect_to_reply'][-1] * 1000:.1f} ms")
    return out


async def _warm(sandbox: str, rounds: int, tmp: Path, say: Callable[[str], None]) -> Samples:
    out: Samples = {"floor": [], "connect_to_reply": [], "spawn_call": []}
    names = ["w", *(f"c{i}" for i in range(rounds))]
    toml = "".join(_cell_toml(name, activation='"on_demand"') for name in names)
    home = _new_home()
    logs: list[str] = []
    try:
        async with _open_root(home, toml, sandbox, logs) as root:
            socket_dir = root.paths.socket_dir
            await _first_reply(socket_dir, "w", -1)  # untimed warm-up
            for r, name in enumerate(names[1:]):
                out["floor"].append(_floor_once(tmp))
                _expect_state(root, name, "dormant")
                wall0 = time.monotonic()
                t0 = time.perf_counter()
                await _first_reply(socket_dir, name, r)
                out["connect_to_reply"].append(time.perf_counter() - t0)
                spawned = _spawned_after(root, name, wall0)
                if spawned is not None:
                    out["spawn_call"].append(spawned)
                # let it finish starting (CellReady) before the next round
                await _until(root, name, functools.partial(_in_state, root, name, "running"))
                say(f"{sandbox} warm round {r + 1}/{rounds}: "
                    f"{out['connect_to_reply'][-1] * 1000:.1f} ms")
    except Exception as exc:
        raise _with_logs(exc, logs) from exc
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return out


async def _restart(sandbox: str, rounds: int, tmp: Path, say: Callable[[str], None]) -> Samples:
    return await _restart_with(sandbox, rounds, tmp, say, standby=True)


async def _restart_cold(
    sandbox: str, rounds: int, tmp: Path, say: Callable[[str], None]
) -> Samples:
    return await _restart_with(sandbox, rounds, tmp, say, standby=False)


async def _restart_with(
    sandbox: str, rounds: int, tmp: Path, say: Callable[[str], None], *, standby: bool
) -> Samples:
    out: Samples = {"floor": [], "kill_to_reply": [], "kill_to_spawn": [], "spawn_to_reply": [],
                    "retries": []}
    toml = "[supervisor]\nintensity = 1000\nperiod = 1\n\n" + _cell_toml(
        "echo", standby="true" if standby else "false"
    )
    home = _new_home()
    logs: list[str] = []
    try:
        async with _open_root(home, toml, sandbox, logs) as root:
            async with Synapse.grow("echo", socket_dir=root.paths.socket_dir) as syn:
                for r in range(-1, rounds):  # round -1: untimed warm-up
                    running = functools.partial(_in_state, root, "echo", "running")
                    await _until(root, "echo", running)
                    await syn.fire(Echo(0))  # connected before the kill
                    if standby:
                        # A crash in steady state: the standby spawned when the
                        # previous process became ready has finished its imports.
                        await _until(root, "echo", lambda: root.slots["echo"].standby is not None)
                        await trio.sleep(_STANDBY_SETTLE)
                    before = root.slots["echo"].instance
                    assert before is not None
                    floor = _floor_once(tmp)
                    wall0 = time.monotonic()
                    t0 = time.perf_counter()
                    root.backend.kill(before.cell_id, as_crash=True)  # the serving process
                    retries = 0
                    with trio.fail_after(_TIMEOUT):
                        while True:
                            try:
                                reply = await syn.fire(Echo(r))
                                break
                            except CellUnavailable:
                                retries += 1
                    t1 = time.perf_counter()
                    _expect_echo("echo", reply, r)
                    if r < 0:
                        continue
                    out["floor"].append(floor)
                    out["kill_to_reply"].append(t1 - t0)
                    out["retries"].append(float(retries))
                    instance = root.slots["echo"].instance
                    if instance is not before and instance is not None \
                            and instance.started_at is not None:
                        spawned = max(0.0, instance.started_at - wall0)
                        out["kill_to_spawn"].append(spawned)
                        out["spawn_to_reply"].append(max(0.0, t1 - t0 - spawned))
                    say(f"{sandbox} restart round {r + 1}/{rounds}: "
                        f"{out['kill_to_reply'][-1] * 1000:.1f} ms")
    except Exception as exc:
        raise _with_logs(exc, logs) from exc
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return out


def _profile(sandbox: str, samples: int) -> Samples:
    """Spawn -> first byte of ``python -c <code>; write 1 byte`` through the backend itself."""
    home = _new_home()
    out: Samples = {key: [] for key in _PROFILE_CODE}
    try:
        env = mesh_env(home, sandbox)
        paths = Paths.from_env(env)
        backend = select_backend(env, paths=paths)
        for key, code in _PROFILE_CODE.items():
            cell_id = key.replace("_", "-")
            backend.create(CellSpec(
                name=cell_id, argv=(sys.executable, "-c", code + _PROFILE_TAIL),
                env=WorkloadEnv(items={"PYTHONDONTWRITEBYTECODE": "1"}),
            ))
            try:
                for _ in range(samples):
                    out[key].append(_profile_once(backend, cell_id))
            finally:
                backend.destroy(cell_id, grace=1.0)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return out


def _profile_once(backend: CellBackend, cell_id: str) -> float:
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        t0 = time.perf_counter()
        try:
            backend.spawn(cell_id, stdout=write_end)
        finally:
            os.close(write_end)
        byte = os.read(read_end, 1)
        t1 = time.perf_counter()
    finally:
        os.close(read_end)
    status = backend.wait(cell_id)  # no timeout: Popen.wait(timeout) polls
    if byte != b"x" or not status.ok:
        raise RuntimeError(f"profile {cell_id!r} under {backend.name}: {status}")
    return t1 - t0


def _with_logs(exc: BaseException, logs: Sequence[str]) -> RuntimeError:
    tail = "\n".join(logs[-8:])
    return RuntimeError(f"{type(exc).__name__}: {exc}" + (f"\nroot log:\n{tail}" if tail else ""))


# --------------------------------------------------------------------------
# Summaries and the report.


def _summary(values: Sequence[float], floor: Sequence[float] | None = None) -> dict[str, Any]:
    ms = [v * 1000.0 for v in values]
    out: dict[str, Any] = {
        "samples": len(ms),
        "median_ms": median(ms),
        "p99_ms": percentile(ms, 99),
        "min_ms": min(ms),
        "all_ms": ms,
    }
    if floor:
        paired = [v / f for v, f in zip(values, floor, strict=False) if f > 0]
        out["ratio"] = median(paired) if paired else None
        out["round_ratios"] = paired
        out["ratio_of_medians"] = median(values) / median(floor)
    return out


def _summarize(kind: str, raw: Samples) -> dict[str, Any]:
    floor = raw.get("floor") or None
    out: dict[str, Any] = {}
    for key, values in raw.items():
        if not values or key == "floor":
            continue
        if key == "retries":
            out[key] = {"median": median(values), "max": max(values)}
            continue
        headline = key in ("connect_to_reply", "root_to_reply", "kill_to_reply")
        out[key] = _summary(values, floor if headline else None)
    if floor:
        out["floor"] = _summary(floor)
    return out


def run_spawn_bench(
    params: SpawnParams, *, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run every measurement under every sandbox of ``params``; return the JSON-ready report.

    A measurement that fails is reported (``error``), not raised; a sandbox
    that cannot run here is reported as ``skipped``.
    """
    from .wire import _host_facts

    say = progress or (lambda _msg: None)
    host = _host_facts()
    started = time.monotonic()
    results: dict[str, Any] = {}
    floor_all: list[float] = []
    with tempfile.TemporaryDirectory(prefix="cmsf-", dir="/tmp") as tmp_text:
        tmp = Path(tmp_text)
        for sandbox in params.sandboxes:
            skipped = _sandbox_unavailable(sandbox)
            if skipped is not None:
                results[sandbox] = {"skipped": skipped}
                say(f"{sandbox}: skipped ({skipped})")
                continue
            entry: dict[str, Any] = {}
            for kind, measure in (
                ("cold", _cold), ("warm", _warm), ("restart", _restart),
                ("restart_no_standby", _restart_cold),
            ):
                try:
                    raw = trio.run(measure, sandbox, params.rounds, tmp, say)
                except Exception as exc:
                    entry[kind] = {"error": str(exc)}
                    say(f"{sandbox} {kind}: FAILED: {exc}")
                    continue
                floor_all += raw["floor"]
                entry[kind] = _summarize(kind, raw)
            try:
                prof = _profile(sandbox, params.profile_samples)
                entry["profile"] = {k: _summary(v) for k, v in prof.items()}
            except Exception as exc:
                entry["profile"] = {"error": str(exc)}
            results[sandbox] = entry
    host["loadavg_end"] = list(os.getloadavg())
    host["elapsed_s"] = round(time.monotonic() - started, 1)
    report: dict[str, Any] = {
        "host": host,
        "params": {"rounds": params.rounds, "sandboxes": list(params.sandboxes),
                   "profile_samples": params.profile_samples},
        "floor": _summary(floor_all) if floor_all else None,
        "tractor_reported_ms": TRACTOR_REPORTED_MS,
        "sandboxes": results,
    }
    report["targets"] = _targets(report)
    return report


def _sandbox_unavailable(sandbox: str) -> str | None:
    if sandbox != "bwrap":
        return None
    from ..sandbox._bwrap import find_bwrap, probe_bwrap

    return probe_bwrap(find_bwrap())


def _targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for kind, sandboxes, limit in TARGETS:
        key = "kill_to_reply" if kind.startswith("restart") else "connect_to_reply"
        for sandbox in sandboxes:
            m = report["sandboxes"].get(sandbox, {}).get(kind, {}).get(key)
            value = None if m is None else m["median_ms"]
            rows.append({
                "measurement": kind, "sandbox": sandbox, "stat": f"{key} median",
                "target_ms": limit, "value_ms": value,
                "met": None if value is None else value <= limit,
            })
    return rows


_ROWS: Final = (
    ("cold", "connect_to_reply", "cold: connect -> first reply (fresh CELL_HOME)"),
    ("cold", "root_to_reply", "cold: root start -> first reply (+DNA build)"),
    ("warm", "connect_to_reply", "warm: connect -> first reply (dormant cell)"),
    ("restart", "kill_to_reply", "restart: kill -9 -> reply (standby takes over)"),
    ("restart_no_standby", "kill_to_reply", "restart: kill -9 -> reply (standby = false)"),
)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(header), "-+-".join("-" * w for w in widths), *(line(r) for r in rows)]


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f} ms"


def format_report(report: dict[str, Any]) -> str:
    """Render a report from :func:`run_spawn_bench` as the human-readable table."""
    h = report["host"]
    p = report["params"]
    out = [
        f"cellmesh bench spawn -- {h['date']} -- Python {h['python']} ({h['implementation']}) -- "
        f"{h['cpu_count']} CPUs ({h['cpus_usable']} usable) -- {h['platform']}",
        f"trio {h['trio']}, cellmesh {h['cellmesh']} ({h['cellmesh_git']}); {p['rounds']} rounds"
        f" per measurement, {h['elapsed_s']} s; load avg {h['loadavg_start'][0]:.2f} -> "
        f"{h['loadavg_end'][0]:.2f}",
        "floor = bare `python -c` (this interpreter, no sandbox) started with Popen, accepting "
        "one connection on an inherited listening socket and writing 1 byte (Popen -> byte);",
        "        one floor sample is taken right before every cellmesh sample",
        "",
    ]
    targets = {(t["measurement"], t["sandbox"]): t for t in report["targets"]}
    rows: list[list[str]] = []
    for sandbox, entry in report["sandboxes"].items():
        if "skipped" in entry:
            rows.append(["(all)", sandbox, "skipped", "", "", "", "", "", ""])
            continue
        for kind, key, label in _ROWS:
            m = entry.get(kind, {})
            if "error" in m:
                rows.append([label, sandbox, "FAILED", "", "", "", "", "", ""])
                continue
            s = m.get(key)
            if s is None:
                continue
            floor = m.get("floor", {}).get("median_ms")
            t = targets.get((kind, sandbox)) if key != "root_to_reply" else None
            verdict = "-" if t is None or t["met"] is None else ("PASS" if t["met"] else "MISS")
            rr = s.get("round_ratios") or []
            rows.append([
                label, sandbox, _ms(s["median_ms"]), _ms(s["p99_ms"]), _ms(floor),
                "-" if s.get("ratio") is None else f"{s['ratio']:.1f}x",
                f"{min(rr):.1f}-{max(rr):.1f}" if rr else "-",
                "-" if t is None else f"<= {t['target_ms']:g} ms", verdict,
            ])
    floor = report["floor"]
    if floor is not None:
        rows.append(["floor: bare python -c, Popen -> 1st byte", "none", _ms(floor["median_ms"]),
                     _ms(floor["p99_ms"]), "", "1.0x", "", "-", "-"])
    rows.append(["(ref) tractor: start one actor", "?", f"~{TRACTOR_REPORTED_MS:g} ms",
                 "", "", "", "", "reported by tractor, not measured here", "-"])
    out += _table(["metric", "sandbox", "median", "p99", "floor", "ratio", "per round",
                   "target", "met?"], rows)
    targeted = [t for t in report["targets"] if t["met"] is not None]
    out += [
        "",
        f"targets met: {sum(1 for t in targeted if t['met'])}/{len(targeted)}",
        "ratio = cellmesh/floor, the median over rounds of the ratio within each round"
        " (per round = its min-max)",
        "",
        "where the time goes (medians):",
    ]
    for sandbox, entry in report["sandboxes"].items():
        if "skipped" in entry:
            out.append(f"  {sandbox}: skipped: {entry['skipped']}")
            continue
        out += _breakdown(sandbox, entry)
    errors = [
        (sandbox, kind, m["error"]) for sandbox, entry in report["sandboxes"].items()
        for kind, m in entry.items() if isinstance(m, dict) and "error" in m
    ]
    if errors:
        out += ["", "failures:"]
        out += [f"  {s} {k}: {e.strip()[:600]}" for s, k, e in errors]
    return "\n".join(out) + "\n"


def _med(entry: dict[str, Any], kind: str, key: str) -> float | None:
    m = entry.get(kind, {}).get(key)
    return None if not isinstance(m, dict) or "median_ms" not in m else float(m["median_ms"])


def _breakdown(sandbox: str, entry: dict[str, Any]) -> list[str]:
    prof = entry.get("profile", {})
    bare = _med(entry, "profile", "python_pass") if "error" not in prof else None
    imp = _med(entry, "profile", "import_runtime") if "error" not in prof else None
    out = [f"  {sandbox}:"]
    dna = _med(entry, "cold", "dna_build")
    if dna is not None:
        out.append(f"    DNA build on an empty cache (at root start)      {_ms(dna)}")
    if bare is not None and imp is not None:
        trio_ms = _med(entry, "profile", "import_trio")
        out.append(f"    `python -c pass` spawned through the backend     {_ms(bare)}"
                   "  (interpreter + sandbox setup; spawn -> 1st byte on stdout)")
        if trio_ms is not None:
            out.append(f"    `import trio` through it                         {_ms(trio_ms)}"
                       f"  (trio alone: {_ms(trio_ms - bare)})")
        out.append(f"    `import cellmesh.actors.runtime` through it      {_ms(imp)}"
                   f"  (all the runtime's imports: {_ms(imp - bare)})")
    elif "error" in prof:
        out.append(f"    profile FAILED: {prof['error'][:300]}")
    warm = _med(entry, "warm", "connect_to_reply")
    spawn_call = _med(entry, "warm", "spawn_call")
    if warm is not None:
        out.append(f"    warm: connect -> spawn() returned                {_ms(spawn_call)}"
                   "  (activation watcher + backend.spawn)")
        if imp is not None and spawn_call is not None:
            out.append(f"    warm: spawn() returned -> reply                  "
                       f"{_ms(warm - spawn_call)}  (a standby had paid the "
                       f"{_ms(imp)} of imports: go, trio.run, umbilical, on_start, reply)")
    k2s = _med(entry, "restart", "kill_to_spawn")
    s2r = _med(entry, "restart", "spawn_to_reply")
    if k2s is not None:
        out.append(f"    restart: kill -> new process spawned             {_ms(k2s)}"
                   "  (exit noticed via pidfd, supervisor, backend.spawn)")
        out.append(f"    restart: spawned -> reply                        {_ms(s2r)}")
    retries = entry.get("restart", {}).get("retries")
    if retries is not None:
        out.append(f"    restart: calls that met the dead connection      median "
                   f"{retries['median']:g}, max {retries['max']:g} (retried)")
    return out


def main(
    *,
    rounds: int | None = None,
    sandbox: str = "both",
    json_output: bool = False,
    quick: bool = False,
    out: IO[str] | None = None,
) -> int:
    """Run the benchmark and print the table or, with ``json_output``, JSON."""
    stream = out if out is not None else sys.stdout
    params = QUICK if quick else FULL
    if sandbox not in (*SANDBOXES, "both"):
        raise ValueError(f"--sandbox must be bwrap, host or both, got {sandbox!r}")
    params = attrs.evolve(
        params, rounds=rounds if rounds is not None else params.rounds,
        sandboxes=SANDBOXES if sandbox == "both" else (sandbox,),
    )

    def progress(msg: str) -> None:
        sys.stderr.write(f"[bench spawn] {msg}\n")
        sys.stderr.flush()

    report = run_spawn_bench(params, progress=progress)
    if json_output:
        stream.write(json.dumps(report, indent=2) + "\n")
    else:
        stream.write(format_report(report))
    return 0

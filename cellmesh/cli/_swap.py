"""``cellmesh swap`` and ``cellmesh reload``: change a running mesh's code without failing a call.

Both are requests to the root (docs/swap.md): :class:`~cellmesh.actors.control.SwapCell`
per cell, :class:`~cellmesh.actors.control.ReloadManifest` for the manifest.
The rendering is pure (:func:`report_lines`, :func:`summary_line`), so tests
need no root. Exit status: 0 when every swap ended well (swapped, unchanged,
or retargeted for the next start), 1 when one rolled back or failed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Final, TextIO

import cyclopts
import trio

from ..actors.control import (
    ReloadManifest,
    ReloadReport,
    StatusReply,
    SwapCell,
    SwapReport,
    swap_times_problem,
)
from ..actors.exitcause import clean
from ..actors.membership import parse_replica_name
from ..config import Paths, check_cell_name
from ..errors import ConfigError
from ._client import RootRefused, control_call
from ._ops import fetch_status

#: Default seconds until the new version must serve (else it rolls back).
DEFAULT_TIMEOUT: Final = 30.0
#: Default seconds the new version serves on probation before the old one exits.
DEFAULT_GRACE: Final = 1.0
_OK: Final = ("swapped", "unchanged", "retargeted")


def _dna(digest: str) -> str:
    return digest[:12] if digest else "-"


def _version(version: str) -> str:
    return version or "-"


#: The new version's last output lines a failed swap shows (the rest: `cellmesh logs`).
SHOWN_TAIL = 6


def report_lines(report: SwapReport) -> list[str]:
    """What ``cellmesh swap`` prints for one cell (without the ``cellmesh:`` prefix),
    each line printable: the cause and output lines come from the new version's
    process, which may write escape sequences."""
    return [clean(line, MAX_LINE) for line in _report_lines(report)]


#: The longest line ``cellmesh swap`` prints.
MAX_LINE = 2000


def _report_lines(report: SwapReport) -> list[str]:
    name = report.name
    outcome = report.outcome
    if outcome == "unchanged":
        return [f"{name}: DNA unchanged ({_dna(report.from_dna)}): nothing to do"]
    if outcome == "retargeted":
        return [f"{name} is not running: its next start runs DNA {_dna(report.to_dna)} "
                f"(was {_dna(report.from_dna)})"]
    if outcome == "swapped":
        line = (f"swapped {name}: DNA {_dna(report.from_dna)} -> {_dna(report.to_dna)}, "
                f"version {_version(report.from_version)} -> {_version(report.to_version)}")
        replicas = [k for k in report.timeline if "/" in k]  # a replicated cell's
        if replicas:
            steps = ", ".join(f"{k} {report.timeline[k]:.0f} ms" for k in replicas)
            line += f"; one replica at a time, caught up at: {steps}"
        elif report.serving_ms is not None:
            line += f"; serving after {report.serving_ms:.0f} ms"
        if report.state_bytes is not None:
            line += f" (state of {report.state_bytes} bytes handed over)"
        return [line]
    what = "rolled back" if outcome == "rolled_back" else "failed"
    # A process ran (its output is in the logs) unless the swap ended while the new DNA
    # was being built: then the cause says it all.
    ran = bool(report.log_tail) or bool(set(report.timeline) - {"preparing"})
    lines = [f"swap of {name} {what}: {_one_line(report.cause, name if ran else None)}"]
    if outcome == "rolled_back":
        lines.append(f"{name} still runs DNA {_dna(report.from_dna)} "
                     f"(version {_version(report.from_version)}), with its state")
    if report.log_tail:
        lines.append("the new version's last output:")
        lines.extend(f"  | {line}" for line in report.log_tail[-SHOWN_TAIL:])
    if ran:
        lines.append(f"see `cellmesh logs {name}`")
    return lines


def _one_line(cause: str, name: str | None) -> str:
    """A cause as one line: a multi-line one (a traceback the new version printed)
    becomes its first and last lines, and where the rest is (``name``'s logs, when a
    process of it ran)."""
    lines = [line.strip() for line in cause.splitlines() if line.strip()]
    if not lines:
        return "no cause given"
    if len(lines) == 1:
        return lines[0]
    rest = f" (its output: `cellmesh logs {name}`)" if name is not None else ""
    return f"{lines[0]} [...] {lines[-1]}{rest}"


def summary_line(reports: list[SwapReport]) -> str:
    """``3 cells: 1 swapped, 2 unchanged`` (outcomes in a fixed order)."""
    order = ("swapped", "retargeted", "unchanged", "rolled_back", "failed")
    counts = {o: sum(r.outcome == o for r in reports) for o in order}
    parts = [f"{n} {o.replace('_', ' ')}" for o, n in counts.items() if n]
    return f"{len(reports)} cells: " + (", ".join(parts) if parts else "nothing to do")


def _print(report: SwapReport, out: TextIO, err: TextIO) -> None:
    lines = report_lines(report)
    if report.outcome in _OK:
        for line in lines:
            out.write(f"cellmesh: {line}\n")
    else:
        err.write(f"cellmesh: error: {lines[0]}\n")
        for line in lines[1:]:
            err.write(f"cellmesh: {line}\n")


def _streams(
    out: TextIO | None, err: TextIO | None, timeout: float, grace: float
) -> tuple[TextIO, TextIO]:
    """Check ``--timeout`` and ``--grace``; the output streams (stdout, stderr by default)."""
    problem = swap_times_problem(timeout, grace)  # the root's own rule
    if problem is not None:
        raise ConfigError(f"--{problem[0]}", problem[1])
    return (out if out is not None else sys.stdout, err if err is not None else sys.stderr)


def run_swap(
    name: str | None, *, all_cells: bool, timeout: float, grace: float, rollback: bool,
    out: TextIO | None = None, err: TextIO | None = None,
) -> int:
    """Implementation of ``cellmesh swap``."""
    out, err = _streams(out, err, timeout, grace)
    if all_cells == (name is not None):
        raise ConfigError("swap", "give one cell NAME or --all")
    if all_cells and rollback:
        raise ConfigError("--rollback", "applies to one cell NAME, not --all")
    paths = Paths.from_env()
    if name is not None:
        replica = parse_replica_name(name)  # X/1: the root explains that the group is swapped
        check_cell_name(name if replica is None else replica[0], source="NAME")
        report = trio.run(control_call, paths, SwapCell(
            name=name, timeout=timeout, grace=grace, rollback=rollback,
        ))
        if not isinstance(report, SwapReport):
            raise ConfigError("swap", f"unexpected reply {type(report).__name__}")
        _print(report, out, err)
        return 0 if report.outcome in _OK else 1

    def shown(report: SwapReport) -> None:  # as each swap ends: a long --all shows progress
        if report.outcome != "unchanged":
            _print(report, out, err)
            out.flush()

    reports = trio.run(_swap_all, paths, timeout, grace, shown)
    out.write(f"cellmesh: {summary_line(reports)}\n")
    return 0 if all(r.outcome in _OK for r in reports) else 1


def swap_targets(status: StatusReply) -> list[str]:
    """What ``swap --all`` swaps, in the root's order: each cell, and each replicated cell
    once (its rows ``X/0``, ``X/1`` ... are one swap of ``X``)."""
    return list(dict.fromkeys(
        cell.name if cell.replica is None else cell.replica.group for cell in status.cells
    ))


async def _swap_all(
    paths: Paths, timeout: float, grace: float, shown: Callable[[SwapReport], None]
) -> list[SwapReport]:
    """Swap every cell of the mesh, one at a time, in the root's order; ``shown`` gets
    each report as its swap ends.

    A replicated cell's rows (``X/0``, ``X/1`` ...) are one swap of ``X``, which
    swaps its replicas one at a time. A cell the root refuses to swap (a swap of it
    already runs, it went away meanwhile) is reported ``failed`` with the refusal,
    and the others are still swapped.
    """
    status = await fetch_status(paths)
    reports = []
    for name in swap_targets(status):
        try:
            reply = await control_call(
                paths, SwapCell(name=name, timeout=timeout, grace=grace, rollback=False)
            )
        except RootRefused as exc:
            reply = refused_report(name, str(exc))
        if not isinstance(reply, SwapReport):
            raise ConfigError("swap", f"unexpected reply {type(reply).__name__}")
        reports.append(reply)
        shown(reply)
    return reports


def refused_report(name: str, reason: str) -> SwapReport:
    """The report of a swap the root refused to start (nothing changed)."""
    return SwapReport(
        name=name, outcome="failed", cause=f"refused: {reason}", from_dna="", to_dna="",
        from_version="", to_version="", serving_ms=None, total_ms=0.0, state_bytes=None,
        log_tail=[], timeline={},
    )


def run_reload(
    *, timeout: float, grace: float, dry_run: bool, out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Implementation of ``cellmesh reload``."""
    out, err = _streams(out, err, timeout, grace)
    report = trio.run(control_call, Paths.from_env(), ReloadManifest(
        timeout=timeout, grace=grace, dry_run=dry_run,
    ))
    if not isinstance(report, ReloadReport):
        raise ConfigError("reload", f"unexpected reply {type(report).__name__}")
    for line in report.lines:  # may quote a new version's import error: printable only
        out.write(f"cellmesh: {clean(line, MAX_LINE, keep_newlines=True)}\n")
    for swap in report.swaps:
        if swap.outcome not in _OK:
            _print(swap, out, err)
    if not report.ok:
        err.write("cellmesh: error: the reload did not complete (see above)\n")
    return 0 if report.ok else 1


def register(app: cyclopts.App) -> None:
    """Attach ``swap`` and ``reload`` to ``app``."""

    @app.command(name="swap")
    def _swap(
        name: str | None = None,
        /,
        *,
        all: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        grace: float = DEFAULT_GRACE,
        rollback: bool = False,
    ) -> int:
        """Swap a running cell to the current content of its DNA, without failing a call.

        The new version starts beside the old one; the old one finishes its
        calls in flight and hands its state over (on_swap_out -> on_swap_in);
        new calls wait in the socket's backlog meanwhile. If the new version
        fails to import, fails its hand-over, is not ready within TIMEOUT or
        crashes within GRACE seconds, the old version serves on with its
        state, and the command exits 1 naming the cause. Identical DNA does
        nothing. A replicated cell (NAME without /i) is swapped one replica
        at a time, followers first, the leader last after a leadership
        transfer; each recovers from its own log and catches up before the
        next. See docs/swap.md.

        Parameters
        ----------
        name
            The cell to swap (a replicated cell: the group's name).
        all
            Swap every cell whose DNA changed.
        timeout
            Seconds until the new version must serve (a replicated cell: per step
            of each replica).
        grace
            Seconds the new version serves on probation (a crash rolls back).
        rollback
            Swap back to the DNA the cell ran before its last swap.
        """
        return run_swap(name, all_cells=all, timeout=timeout, grace=grace, rollback=rollback)

    @app.command(name="reload")
    def _reload(
        *,
        timeout: float = DEFAULT_TIMEOUT,
        grace: float = DEFAULT_GRACE,
        dry_run: bool = False,
    ) -> int:
        """Re-read the running mesh's manifest and apply the difference.

        New cells are started, removed cells stopped, changed cells swapped
        (see `cellmesh swap`), supervisor settings updated; prints what it
        did. A change the root cannot apply live (a new supervisor, a
        strategy, a cell moved to another supervisor) refuses the whole
        reload before anything changes.

        Parameters
        ----------
        timeout
            Seconds each swapped cell's new version has to serve.
        grace
            Seconds each swapped cell's new version serves on probation.
        dry_run
            Only print what would be done.
        """
        return run_reload(timeout=timeout, grace=grace, dry_run=dry_run)


__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_TIMEOUT",
    "register",
    "report_lines",
    "run_reload",
    "run_swap",
    "summary_line",
]

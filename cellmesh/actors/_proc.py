"""Process facts from ``/proc``: a process tree, its resident memory and CPU time.

The root reports RSS and CPU% per cell. A cell is a tree (bwrap, its init,
the Python runtime, whatever the cell started), so both are summed over the
tree rooted at the pid the backend reports. One scan of ``/proc`` per status
request; processes that vanish mid-scan are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Final

import attrs

from ..sandbox._process import process_state

_PAGE: Final = os.sysconf("SC_PAGE_SIZE")
_TICKS: Final = os.sysconf("SC_CLK_TCK")


@attrs.frozen(kw_only=True)
class ProcSample:
    """One process's parent, resident bytes and CPU seconds (user + system)."""

    ppid: int
    rss: int
    cpu: float


def parse_stat(text: str) -> ProcSample | None:
    """Parse ``/proc/<pid>/stat`` (the command may contain spaces and parentheses)."""
    try:
        rest = text.rsplit(")", 1)[1].split()
        ppid = int(rest[1])
        utime, stime = int(rest[11]), int(rest[12])
        rss_pages = int(rest[21])
    except (IndexError, ValueError):
        return None
    return ProcSample(ppid=ppid, rss=rss_pages * _PAGE, cpu=(utime + stime) / _TICKS)


def is_live(pid: int) -> bool:
    """True while ``pid`` exists and has not exited (a zombie, not yet reaped, has)."""
    return process_state(pid) not in ("", "Z", "X")


def is_stopped(pid: int) -> bool:
    """True while ``pid`` is stopped (SIGSTOP, or by a tracer)."""
    return process_state(pid) in ("T", "t")


def scan(proc: str = "/proc") -> dict[int, ProcSample]:
    """Every process's sample, by pid."""
    out: dict[int, ProcSample] = {}
    try:
        names = os.listdir(proc)
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"{proc}/{name}/stat", encoding="utf-8", errors="replace") as f:
                sample = parse_stat(f.read())
        except OSError:
            continue
        if sample is not None:
            out[int(name)] = sample
    return out


def tree(pid: int, samples: Mapping[int, ProcSample]) -> list[int]:
    """``pid`` and all its descendants present in ``samples``."""
    children: dict[int, list[int]] = {}
    for child, sample in samples.items():
        children.setdefault(sample.ppid, []).append(child)
    out: list[int] = []
    todo = [pid] if pid in samples else []
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, ()))
    return out


def totals(pids: Iterable[int], samples: Mapping[int, ProcSample]) -> tuple[int, float]:
    """Summed RSS bytes and CPU seconds of ``pids``."""
    rss = 0
    cpu = 0.0
    for pid in pids:
        sample = samples.get(pid)
        if sample is not None:
            rss += sample.rss
            cpu += sample.cpu
    return rss, cpu


__all__ = ["ProcSample", "parse_stat", "scan", "totals", "tree"]

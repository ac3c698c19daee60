"""How ``status`` and ``top`` print what the root relays: short, safe text.

The root relays figures and text that cells reported (cells are untrusted:
docs/security.md) and the root bounds them, but what is printed does not
rely on it. Every formatter here keeps its output short whatever the value
(a column cannot be widened by one cell's figure), shows ``-`` for what is
unknown, not finite or negative, and :func:`shown` makes text printable.
:func:`json_safe` does the same for ``status --json``: only numbers every
JSON reader takes. Pure.
"""

from __future__ import annotations

import datetime
import math
from typing import Final

from rich.text import Text

from ..actors.control import CellStatus
from ..actors.exitcause import printable
from ..actors.lastwords import duration_text

#: Counters below this are shown exactly; above, with a unit (:func:`fmt_count`).
COUNT_EXACT: Final = 1_000_000_000
#: Durations from this many days on are shown as ``>999d``.
MAX_SHOWN_DAYS: Final = 999
_BYTE_UNITS: Final = ("B", "K", "M", "G", "T", "P", "E")
_COUNT_UNITS: Final = ("K", "M", "G", "T", "P", "E")


def fmt_duration(seconds: float | None) -> str:
    """``None`` -> ``-``; else the two largest units: ``45s``, ``3m05s``, ``2h07m``, ``3d04h``.

    At most 7 characters: ``>999d`` from 999 days on; ``-`` when not finite or negative.
    """
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    if seconds >= MAX_SHOWN_DAYS * 86400:
        return f">{MAX_SHOWN_DAYS}d"
    return duration_text(seconds)


def fmt_bytes(n: int | None) -> str:
    """``None`` -> ``-``; else binary units: ``512B``, ``1.5K``, ``12.0M``, ``2.0G`` ... ``E``.

    At most 7 characters (``>1023E`` beyond); ``-`` when negative.
    """
    if n is None or n < 0:
        return "-"
    if n >= 1024 ** len(_BYTE_UNITS):
        return f">1023{_BYTE_UNITS[-1]}"
    value = float(n)
    for unit in _BYTE_UNITS:
        if value < 1024 or unit == _BYTE_UNITS[-1]:
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def fmt_count(n: int | None) -> str:
    """A counter: ``-`` for None; exact below a billion (``123456789``), then three
    digits and a decimal unit (``1.23G``, ``45.6T``, ``789P``); ``>999E`` from 10**21.

    At most 9 characters (10 negative) whatever ``n``: a huge value cannot widen a column.
    """
    if n is None:
        return "-"
    if -COUNT_EXACT < n < COUNT_EXACT:
        return str(n)
    sign = "-" if n < 0 else ""
    if abs(n) >= 1000 ** (len(_COUNT_UNITS) + 1):
        return f"{sign}>999{_COUNT_UNITS[-1]}"
    value = float(abs(n))
    for unit in _COUNT_UNITS:
        value /= 1000
        if value < 1000 or unit == _COUNT_UNITS[-1]:
            digits = 2 if value < 10 else 1 if value < 100 else 0
            return f"{sign}{value:.{digits}f}{unit}"
    raise AssertionError("unreachable")


def fmt_us(us: float | None) -> str:
    """A service time in microseconds: ``-``, ``850us``, ``1.25ms``, ``2.10s``, ``3m05s``.

    At most 9 characters whatever ``us`` (``>999d`` beyond); ``-`` when not finite or negative.
    """
    if us is None or not math.isfinite(us) or us < 0:
        return "-"
    if us < 1000:
        return f"{us:.0f}us"
    if us < 1_000_000:
        return f"{us / 1000:.2f}ms"
    if us < 60_000_000:
        return f"{us / 1_000_000:.2f}s"
    return fmt_duration(us / 1_000_000)


def fmt_percent(p: float | None) -> str:
    """``None`` -> ``-``; else one decimal: ``12.5`` (``>99999`` beyond; ``-`` if not finite)."""
    if p is None or not math.isfinite(p) or p < 0:
        return "-"
    return ">99999" if p >= 100_000 else f"{p:.1f}"


def fmt_rate(r: float | None) -> str:
    """Messages per second: ``-`` when unknown, else ``0.0``, ``12.3``, ``4567``, ``1.23G``."""
    if r is None or not math.isfinite(r) or r < 0:
        return "-"
    return f"{r:.1f}" if r < 100 else fmt_count(round(r))


def fmt_countdown(seconds: float) -> str:
    """Time left before something happens: ``2.1s``, then ``3m05s`` (see :func:`fmt_duration`)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "-"
    return f"{seconds:.1f}s" if seconds < 60 else fmt_duration(seconds)


_STATE_STYLES: Final = {
    "running": "green", "starting": "yellow", "dormant": "cyan", "stopping": "yellow",
    "restarting": "yellow",
}


def _state_style(state: str) -> str:
    return _STATE_STYLES.get(state, "red")


def shown(value: object) -> str:
    """Text the root relays from cells, made safe to print: every control or other
    unprintable character shown as ``?`` (no escape sequence reaches the
    terminal). Print it as a :class:`Text` (literal: a ``[`` is not rich markup,
    a ``:name:`` not an emoji). The root cleans what it keeps too; this does not
    rely on it."""
    return printable(value if isinstance(value, str) else str(value))


def state_text(cell: CellStatus) -> Text:
    """The STATE column: the state, ``swapping (phase)`` while a hot swap runs,
    ``restarting in 2.1s`` while the supervisor waits its backoff delay,
    ``running, silent 23s`` for a process that stopped reporting (hung, stopped)."""
    if cell.swap:
        return Text(f"swapping ({shown(cell.swap)})", style="bold magenta")
    if cell.state == "restarting" and cell.restart_in is not None:
        return Text(f"restarting in {fmt_countdown(cell.restart_in)}",
                    style=_state_style(cell.state))
    if cell.silent_for is not None:  # running, but not heard from: hung or stopped?
        return Text(f"{shown(cell.state)}, silent {fmt_duration(cell.silent_for)}",
                    style="bold red")
    return Text(shown(cell.state), style=_state_style(cell.state))


def fmt_when(at: float) -> str:
    """Unix time ``at`` as ``2026-01-02T03:04:05Z`` (``?`` when it is no date)."""
    try:
        return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return "?"


#: The largest integer ``status --json`` writes (beyond, null): what a 64-bit reader holds.
JSON_MAX_INT: Final = (1 << 63) - 1


def json_safe(value: object) -> object:
    """``value`` with every number a JSON reader takes: a float that is not finite
    (``Infinity``, ``NaN`` are not JSON) and an integer beyond 64 bits (too long to
    even print past 4300 digits) become None. Dicts and lists are copied."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > JSON_MAX_INT:
        return None
    return value


__all__ = [
    "COUNT_EXACT",
    "JSON_MAX_INT",
    "MAX_SHOWN_DAYS",
    "fmt_bytes",
    "fmt_count",
    "fmt_countdown",
    "fmt_duration",
    "fmt_percent",
    "fmt_rate",
    "fmt_us",
    "fmt_when",
    "json_safe",
    "shown",
    "state_text",
]

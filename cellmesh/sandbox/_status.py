"""Why a cell process ended: exit code or signal, classified into a reason.

Reasons: ``exit`` (code 0), ``crash`` (non-zero code or a signal we did not
send), ``limit`` (a resource limit ended it), ``stop`` (we stopped it).
Classification uses facts only -- the raw wait status, whether we sent the
stop, and what the limit mechanisms recorded -- never log text.
"""

from __future__ import annotations

import signal
from typing import Final, Literal

import attrs

from ..config import MEMORY_LIMIT_EXIT_CODE

ExitReason = Literal["exit", "crash", "limit", "stop"]


#: Signals that, under an rlimit-enforced memory limit, mean "ran out of memory".
_MEMORY_SIGNALS: Final = frozenset({signal.SIGKILL, signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT})


@attrs.frozen(kw_only=True)
class ExitStatus:
    """How a cell process ended.

    Exactly one of ``code`` / ``signal`` is set. ``reason`` is the
    classification; ``limit`` names the limit that ended it (``"memory"``,
    ``"cpu"``, ``"pids"``) when ``reason == "limit"``; ``detail`` says which
    evidence was used (for operators, not for code to parse).
    """

    code: int | None
    signal: int | None
    reason: ExitReason
    limit: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        """True when the process exited with code 0."""
        return self.code == 0

    def to_json(self) -> dict[str, object]:
        """The fields as a JSON-ready dict (used by the event log)."""
        return {
            "code": self.code,
            "signal": self.signal,
            "signal_name": None if self.signal is None else _signal_name(self.signal),
            "reason": self.reason,
            "limit": self.limit,
            "detail": self.detail,
        }


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"


@attrs.frozen(kw_only=True)
class LimitEvidence:
    """What the limit mechanisms recorded for one process lifetime."""

    oom_killed: bool = False
    memory_rlimit: bool = False
    cpu_rlimit: bool = False


def classify_exit(
    raw_returncode: int,
    *,
    stopped_by_us: bool,
    evidence: LimitEvidence,
    signal_as_code_offset: bool = False,
) -> ExitStatus:
    """Turn a ``Popen.returncode`` into an :class:`ExitStatus`.

    ``signal_as_code_offset``: the direct child is a monitor (bwrap) that
    reports a signal death of the workload as exit code ``128 + signum``.
    Order of evidence: a cgroup OOM kill beats everything; then our own stop;
    then a signal or code consistent with an rlimit; then crash/exit.
    """
    code: int | None
    sig: int | None
    if raw_returncode < 0:
        code, sig = None, -raw_returncode
    elif signal_as_code_offset and 128 < raw_returncode < 128 + 65:
        code, sig = None, raw_returncode - 128
    else:
        code, sig = raw_returncode, None

    if evidence.oom_killed:
        return ExitStatus(
            code=code, signal=sig, reason="limit", limit="memory", detail="cgroup oom_kill"
        )
    if stopped_by_us:
        return ExitStatus(code=code, signal=sig, reason="stop", detail="stopped by the caller")
    if evidence.cpu_rlimit and sig in (signal.SIGXCPU, signal.SIGKILL):
        return ExitStatus(code=code, signal=sig, reason="limit", limit="cpu", detail="RLIMIT_CPU")
    if evidence.memory_rlimit and sig is not None and sig in _MEMORY_SIGNALS:
        return ExitStatus(
            code=code,
            signal=sig,
            reason="limit",
            limit="memory",
            detail=f"{_signal_name(sig)} under a memory rlimit",
        )
    if evidence.memory_rlimit and code == MEMORY_LIMIT_EXIT_CODE:
        return ExitStatus(
            code=code,
            signal=sig,
            reason="limit",
            limit="memory",
            detail="exit code MEMORY_LIMIT_EXIT_CODE under a memory rlimit",
        )
    if code == 0:
        return ExitStatus(code=0, signal=None, reason="exit")
    return ExitStatus(code=code, signal=sig, reason="crash")


__all__ = ["MEMORY_LIMIT_EXIT_CODE", "ExitReason", "ExitStatus", "LimitEvidence", "classify_exit"]

"""How a cell's exit reads in status, root.log and CellDown (actors/_cells.py describe_exit)."""

from __future__ import annotations

import signal

import pytest

from cellmesh.actors._cells import describe_exit, exit_reason
from cellmesh.actors.exitcause import Failure
from cellmesh.actors.policy import AbnormalExit
from cellmesh.sandbox import ExitStatus

MEMORY_FAILURE = Failure(stage="run", type_name="MemoryError",
                         message="out of memory (the runtime exits with 137)")


def sigkill_under_rlimit() -> ExitStatus:
    return ExitStatus(code=None, signal=signal.SIGKILL, reason="limit", limit="memory",
                      detail="SIGKILL under a memory rlimit")


def test_a_sigkill_without_a_memory_report_is_a_kill_not_the_memory_limit() -> None:
    """kill -9 of a cell with a memory limit read as `memory limit (SIGKILL under a
    memory rlimit)`: RLIMIT_AS sends no signal, so without the runtime's MemoryError
    report it was killed."""
    assert describe_exit(sigkill_under_rlimit()) == "killed by SIGKILL"
    other = Failure(stage="run", type_name="ValueError", message="old news")
    assert describe_exit(sigkill_under_rlimit(), other) == "killed by SIGKILL: ValueError: old news"
    assert exit_reason(sigkill_under_rlimit()) == AbnormalExit(text="killed by SIGKILL")


def test_the_runtimes_memory_exit_still_reads_as_the_memory_limit() -> None:
    """Under bwrap the runtime's exit 137 is reported as a SIGKILL; its MemoryError
    report (written first) keeps it the memory limit. A cgroup OOM kill needs none."""
    text = describe_exit(sigkill_under_rlimit(), MEMORY_FAILURE)
    assert text.startswith("memory limit (SIGKILL under a memory rlimit): MemoryError")
    oom = ExitStatus(code=None, signal=signal.SIGKILL, reason="limit", limit="memory",
                     detail="cgroup oom_kill")
    assert describe_exit(oom) == "memory limit (cgroup oom_kill)"


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT])
def test_a_c_allocation_failure_under_an_rlimit_stays_the_memory_limit(sig: int) -> None:
    status = ExitStatus(code=None, signal=sig, reason="limit", limit="memory",
                        detail=f"{signal.Signals(sig).name} under a memory rlimit")
    assert describe_exit(status).startswith("memory limit (")

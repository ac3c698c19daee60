"""A membrane out of descriptors keeps serving, and says so at a bounded rate.

When ``accept`` fails for want of descriptors (EMFILE), the membrane waits 50 ms
and retries, counting the failures (``MembraneStats.accept_failures``) and
logging the 1st, 10th, 100th and every 1000th: it logged every one (20 lines a
second) until a scale audit found a root's log flooded that way. The membrane
runs in its own process under a low soft ``RLIMIT_NOFILE``; this process holds
connections open until that process has no descriptor left for the next one.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import trio

import cellmesh
from cellmesh import Synapse
from cellmesh.wire.proteins import ProteinRegistry

REG = ProteinRegistry()


@cellmesh.protein("test.accept.Echo", registry=REG)
class Echo:
    n: int


CELL = textwrap.dedent("""
    import os, resource, sys
    import trio
    from cellmesh import open_membrane, protein

    @protein("test.accept.Echo")
    class Echo:
        n: int

    async def echo(msg):
        return msg

    async def main() -> None:
        async with open_membrane("echo", echo, socket_dir=sys.argv[1],
                                 log=lambda line: print("LOG", line, flush=True)) as membrane:
            used = len(os.listdir("/proc/self/fd"))
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (used + 3, hard))
            print("READY", flush=True)
            await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
            print("FAILURES", membrane.stats.accept_failures, flush=True)

    trio.run(main)
""")


def _read_until(proc: subprocess.Popen[str], prefix: str, seen: list[str]) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(prefix):
            return line
    raise AssertionError(f"the cell ended without printing {prefix!r}")


def test_a_membrane_out_of_descriptors_logs_at_a_bounded_rate_and_serves_again(
    tmp_path: Path,
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CELL, str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    held: list[socket.socket] = []
    seen: list[str] = []
    try:
        _read_until(proc, "READY", seen)
        path = str(tmp_path / "echo.sock")
        for _ in range(12):  # 3 descriptors to spare: the rest wait in the backlog
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
            held.append(sock)
        _read_until(proc, "LOG membrane echo: accept failed", seen)
        _read_until(proc, "LOG membrane echo: accept failed", seen)  # the 10th, 0.45 s later
        for sock in held:
            sock.close()
        held.clear()

        async def call() -> object:
            async with Synapse.grow("echo", socket_dir=tmp_path, registry=REG) as syn:
                return await syn.fire(Echo(n=41))

        assert trio.run(call) == Echo(n=41)  # descriptors back: it accepts and serves again
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
        failures = int(_read_until(proc, "FAILURES", seen).split()[1])
        proc.communicate(timeout=30)
    finally:
        for sock in held:
            sock.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert failures >= 10, failures
    logged = [line for line in seen if "accept failed" in line]
    # One line for the 1st failure and one for the 10th, not one line each.
    assert len(logged) == 2, logged
    assert "Too many open files" in logged[0] and "(1 failed so far)" in logged[0]
    assert "(10 failed so far)" in logged[1]

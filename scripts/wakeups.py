"""What a cross-core wake-up costs on this machine: a plain ping-pong, no Trio, no cellmesh.

Two processes bounce 8 bytes over a socketpair, each waiting in ``epoll_wait``
(as a Trio loop does) or in a blocking ``recv``; once free to run on any core,
once both pinned to the first usable core. The difference between the two is
what every message exchange between a client and a cell sleeping on the other
core pays before any work -- the floor under ``cellmesh bench wire``'s
few-calls-in-flight patterns (see the README's "where the time goes").

    .venv/bin/python scripts/wakeups.py [--samples N]
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import sys
import time


def _pingpong(mode: str, samples: int, cpus: set[int] | None) -> tuple[float, float]:
    """Median and p99 round trip (us) of ``samples`` exchanges."""
    a, b = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the echoing peer
        a.close()
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
        _echo(b, mode)
        os._exit(0)
    b.close()
    try:
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
        rtts = _drive(a, mode, samples)
    finally:
        a.close()
        os.waitpid(pid, 0)
    rtts.sort()
    return rtts[len(rtts) // 2] / 1000, rtts[len(rtts) * 99 // 100] / 1000


def _echo(sock: socket.socket, mode: str) -> None:
    ep = select.epoll()
    if mode == "epoll":
        sock.setblocking(False)
        ep.register(sock.fileno(), select.EPOLLIN)
    while True:
        if mode == "epoll":
            ep.poll()
        data = sock.recv(64)
        if not data:
            return
        sock.send(data)


def _drive(sock: socket.socket, mode: str, samples: int) -> list[int]:
    ep = select.epoll()
    if mode == "epoll":
        sock.setblocking(False)
        ep.register(sock.fileno(), select.EPOLLIN)
    clock = time.perf_counter_ns
    rtts = []
    for i in range(samples + samples // 10):  # the first tenth warms up
        t0 = clock()
        sock.send(b"pingpong")
        if mode == "epoll":
            ep.poll()
        sock.recv(64)
        if i >= samples // 10:
            rtts.append(clock() - t0)
    return rtts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20000, help="round trips per case")
    args = parser.parse_args(argv)
    if args.samples < 10:
        parser.error("--samples must be at least 10")
    usable = sorted(os.sched_getaffinity(0))
    print(f"{len(usable)} usable CPUs; round trip of 8 bytes between two processes (us)")
    for mode in ("epoll", "blocking"):
        free = _pingpong(mode, args.samples, None)
        pinned = _pingpong(mode, args.samples, {usable[0]})
        print(f"  {mode:8}  any core: median {free[0]:6.1f}  p99 {free[1]:6.1f}   "
              f"one core: median {pinned[0]:5.1f}  p99 {pinned[1]:5.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

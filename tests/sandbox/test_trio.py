"""The sandbox from Trio: pidfd waits, async teardown, cells owned by an async with block."""

from __future__ import annotations

import os
import sys

import trio

from cellmesh.sandbox import CellBackend, CellSpec, StubBackend, open_cell

PY = sys.executable
SLEEPER = "import time; time.sleep(120)"
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(120)"
)


async def test_open_cell_waits_and_cleans_up(backend: CellBackend) -> None:
    async with open_cell(backend, CellSpec(name="scoped", argv=[PY, "-c", "pass"])):
        status = await backend.wait_async("scoped")
        assert status.reason == "exit"
        assert "scoped" in backend.tracked()
    assert "scoped" not in backend.tracked()


async def test_cancellation_destroys_the_cell(backend: CellBackend) -> None:
    if isinstance(backend, StubBackend):
        return  # nothing runs: covered by the teardown test above
    with trio.move_on_after(0.5) as scope:
        async with open_cell(backend, CellSpec(name="cancelled", argv=[PY, "-c", SLEEPER])):
            await backend.wait_async("cancelled")  # would take 120 s
    assert scope.cancelled_caught
    assert dict(backend.tracked()) == {}


async def test_destroy_async_does_not_block_the_loop(real_backend: CellBackend) -> None:
    r, w = os.pipe()
    real_backend.create(CellSpec(name="stubborn", argv=[PY, "-c", STUBBORN]))
    try:
        real_backend.spawn("stubborn", stdout=w)
        os.close(w)
        w = -1
        await trio.lowlevel.wait_readable(r)
        assert os.read(r, 6) == b"ready\n"
    finally:
        if w >= 0:
            os.close(w)
        os.close(r)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        report = await real_backend.destroy_async("stubborn", grace=0.3)
        nursery.cancel_scope.cancel()
    assert not report.clean
    assert report.exit is not None and report.exit.reason == "stop"
    assert ticks >= 10  # the loop kept running during the grace period

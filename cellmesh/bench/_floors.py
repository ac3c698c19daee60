"""The two Trio floors of ``cellmesh bench wire``: what any Trio code pays here, without I/O.

* **Wake-up floor** (:func:`wake_floor`): ``tasks`` tasks each park
  (``wait_task_rescheduled``) and are woken once per message by one driver
  task, all of them in one batch per round -- exactly what a synapse's
  reader does for ``tasks`` callers that each ``await syn.fire(msg)``, minus
  every byte of I/O. N tasks x ``fire`` can at best reach this rate.
* **Checkpoint floor** (:func:`checkpoint_floor`): a loop of ``await
  trio.lowlevel.checkpoint()``, one scheduler pass each (with its epoll
  call). ``await syn.signal(msg)`` is a checkpoint, so a loop of it can at
  best reach this rate.

Both run in the client worker process, in their own ``trio.run``, and
return messages per second.
"""

from __future__ import annotations

import time
from typing import Any

import trio

__all__ = ["checkpoint_floor", "wake_floor"]


def _no_abort(_: Any) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED


async def wake_floor(tasks: int, total: int) -> float:
    """Messages per second of ``tasks`` parked tasks woken in batches (``total`` wake-ups)."""
    rounds = max(1, total // tasks)
    parked: list[trio.lowlevel.Task] = []
    driver: list[trio.lowlevel.Task] = []

    async def worker() -> None:
        for _ in range(rounds):
            parked.append(trio.lowlevel.current_task())
            if len(parked) == tasks and driver:
                trio.lowlevel.reschedule(driver.pop())
            await trio.lowlevel.wait_task_rescheduled(_no_abort)

    async def drive() -> None:
        for _ in range(rounds):
            if len(parked) < tasks:
                driver.append(trio.lowlevel.current_task())
                await trio.lowlevel.wait_task_rescheduled(_no_abort)
            batch = parked[:]
            parked.clear()
            for task in batch:
                trio.lowlevel.reschedule(task)

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(drive)
        for _ in range(tasks):
            nursery.start_soon(worker)
    return rounds * tasks / (time.perf_counter() - t0)


async def checkpoint_floor(total: int) -> float:
    """Checkpoints per second of a loop of ``await trio.lowlevel.checkpoint()``."""
    t0 = time.perf_counter()
    for _ in range(total):
        await trio.lowlevel.checkpoint()
    return total / (time.perf_counter() - t0)

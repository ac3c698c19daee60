"""Background: the containment every root background task runs under."""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing

from cellmesh.actors._tasks import Background, kill_when_stuck, restart_delay, split_stops


def test_restart_delay_grows_and_is_capped() -> None:
    delays = [restart_delay(n) for n in range(1, 14)]
    assert delays[0] == 0.1
    assert delays == sorted(delays)
    assert max(delays) == 30.0


def test_split_stops_keeps_cancellation_apart_from_failures() -> None:
    err = ValueError("x")
    assert split_stops(err) == (None, err)
    kb = KeyboardInterrupt()
    assert split_stops(kb) == (kb, None)
    stops, rest = split_stops(BaseExceptionGroup("g", [KeyboardInterrupt(), ValueError("y")]))
    assert isinstance(stops, BaseExceptionGroup) and isinstance(rest, ExceptionGroup)


async def test_background_task_failure_is_contained_logged_and_counted() -> None:
    logs: list[str] = []
    async with trio.open_nursery() as nursery:
        tasks = Background(nursery, logs.append)

        async def boom() -> None:
            raise OSError(24, "Too many open files")

        tasks.start_soon(boom, name="boom")
        await trio.testing.wait_all_tasks_blocked()
    assert tasks.failures == 1
    assert logs[0] == "root: contained a failure in boom: OSError: [Errno 24] Too many open files"
    assert any("Traceback" in line for line in logs)


async def test_background_restart_runs_a_failing_server_again_with_back_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs: list[float] = []
    async with trio.open_nursery() as nursery:
        tasks = Background(nursery, lambda _: None)

        async def flaky(*, task_status: trio.TaskStatus[str]) -> None:
            runs.append(trio.current_time())
            task_status.started("up")
            if len(runs) < 4:
                raise RuntimeError("crashed")

        assert await tasks.start(flaky, name="flaky", restart=True) == "up"
    assert len(runs) == 4 and tasks.failures == 3
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    assert gaps == pytest.approx([0.1, 0.2, 0.4])


async def test_background_start_failure_before_started_reaches_the_caller() -> None:
    async with trio.open_nursery() as nursery:
        tasks = Background(nursery, lambda _: None)

        async def cannot_bind(*, task_status: trio.TaskStatus[None]) -> None:
            raise OSError(98, "Address in use")

        with pytest.raises(OSError, match="Address in use"):
            await tasks.start(cannot_bind, name="bind", restart=True)
    assert tasks.failures == 0


async def test_background_cancellation_is_never_contained() -> None:
    with trio.move_on_after(0) as scope:
        async with trio.open_nursery() as nursery:
            tasks = Background(nursery, lambda _: None)
            tasks.start_soon(trio.sleep_forever, name="sleeper", restart=True)
    assert scope.cancelled_caught
    assert tasks.failures == 0


def test_background_guard_contains_a_synchronous_failure() -> None:
    logs: list[str] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            tasks = Background(nursery, logs.append)
            with tasks.guard("exit of x"):
                raise KeyError("x")
            assert tasks.failures == 1
            with pytest.raises(KeyboardInterrupt), tasks.guard("stop"):
                raise KeyboardInterrupt

    trio.run(main)
    assert logs[0].startswith("root: contained a failure in exit of x: KeyError")


async def test_a_forced_stop_waits_while_cells_keep_stopping(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A scale audit: 200 cells stopping one by one (80 ms each) outlasted the 10 s
    of a forced stop, which then SIGKILLed the 119 left. Only a stop that makes
    no progress for ``timeout`` is forced now."""
    left = [200]
    killed: list[tuple[float, int]] = []

    async def stop_one_by_one() -> None:
        while left[0] > 0:
            await trio.sleep(0.08)
            left[0] -= 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_one_by_one)
        await kill_when_stuck(
            10.0, lambda: left[0], lambda n: killed.append((trio.current_time(), n))
        )
    assert killed == [] and left[0] == 0


async def test_a_forced_stop_kills_what_is_left_once_nothing_stops(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left = [5]
    killed: list[tuple[float, int]] = []

    async def two_stop_then_hang() -> None:
        for _ in range(2):
            await trio.sleep(3)
            left[0] -= 1

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(two_stop_then_hang)
        await kill_when_stuck(
            10.0, lambda: left[0], lambda n: killed.append((trio.current_time(), n))
        )
    # The last one stopped at 6 s: the kill comes 10 s later, not at the next 10 s mark.
    assert len(killed) == 1 and killed[0][1] == 3
    assert 16.0 <= killed[0][0] - start <= 16.0 + 0.25 + 1e-9

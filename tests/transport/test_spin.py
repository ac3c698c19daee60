"""Adaptive spinning before the I/O wait (cellmesh.transport._spin).

The policy is pure and driven here outcome by outcome; the spinner is run
against real socket pairs; the flusher's use of both against a real
membrane and synapse. Nothing here is timed: the tests count spins, hits,
misses and descriptors.
"""

from __future__ import annotations

import gc
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import cellmesh
from cellmesh import Receptors, Synapse, open_membrane
from cellmesh.errors import ConfigError
from cellmesh.transport import _spin
from cellmesh.transport._flusher import Flusher
from cellmesh.transport._spin import (
    BUDGET_PERIOD,
    DEFAULT_SPIN_US,
    MAX_BACKOFF,
    MAX_SPIN_SHARE,
    MAX_SPIN_US,
    MIN_BACKOFF,
    MISSES_TO_STOP,
    SPIN_ENV,
    Spinner,
    SpinPolicy,
    spin_window_from_env,
)
from cellmesh.wire.proteins import ProteinRegistry

REG = ProteinRegistry()


@cellmesh.protein("test.spin.Nap", registry=REG)
class Nap:
    seconds: float


@pytest.fixture
def sockdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="cm-spin-") as d:
        yield Path(d)


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


# -- CELL_SPIN_US ----------------------------------------------------------------


def test_the_window_defaults_to_100_us_and_0_turns_spinning_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_spin, "_usable_cpus", lambda: 2)
    assert spin_window_from_env({}) == DEFAULT_SPIN_US / 1e6
    assert spin_window_from_env({SPIN_ENV: ""}) == DEFAULT_SPIN_US / 1e6
    assert spin_window_from_env({SPIN_ENV: "0"}) == 0.0
    assert spin_window_from_env({SPIN_ENV: " 250 "}) == 250 / 1e6
    assert spin_window_from_env({SPIN_ENV: str(MAX_SPIN_US)}) == MAX_SPIN_US / 1e6


def test_a_process_on_one_cpu_never_spins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_spin, "_usable_cpus", lambda: 1)
    assert spin_window_from_env({SPIN_ENV: "100"}) == 0.0


@pytest.mark.parametrize("raw", ["abc", "-1", "1.5", "1e3", "10001", "0x10", "\u0663", "1 0"])
def test_a_bad_window_is_a_config_error_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        spin_window_from_env({SPIN_ENV: raw})
    assert info.value.source == SPIN_ENV
    assert repr(raw) in str(info.value) or raw.strip() in str(info.value)


@given(st.text(max_size=12))
def test_any_value_is_a_window_within_bounds_or_a_config_error(raw: str) -> None:
    try:
        window = spin_window_from_env({SPIN_ENV: raw})
    except ConfigError as exc:
        assert exc.source == SPIN_ENV
    else:
        assert 0.0 <= window <= MAX_SPIN_US / 1e6


# -- the policy ------------------------------------------------------------------


class Waits:
    """Made-up times for a policy: one wait per second, so the time budget
    (a share of each 10 ms period) never binds unless a test wants it to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


SPUN = 0.0001  # what each made-up spin took


def test_two_misses_stop_spinning_and_probes_back_off_exponentially() -> None:
    policy, now = SpinPolicy(), Waits()
    for _ in range(MISSES_TO_STOP):
        assert policy.should_spin(now())
        policy.record(False, SPUN)
    assert not policy.on
    gaps = []
    for _ in range(5):  # five missed probes
        waits = 1
        while not policy.should_spin(now()):
            waits += 1
        gaps.append(waits)
        policy.record(False, SPUN)
    assert gaps == [MIN_BACKOFF, 2 * MIN_BACKOFF, 4 * MIN_BACKOFF, 8 * MIN_BACKOFF,
                    16 * MIN_BACKOFF]
    while not policy.should_spin(now()):
        pass
    policy.record(True, SPUN)  # a probe that sees data turns spinning back on
    assert policy.on and policy.backoff == MIN_BACKOFF
    assert all(policy.should_spin(now()) for _ in range(10))


def test_one_miss_between_hits_keeps_spinning() -> None:
    policy, now = SpinPolicy(), Waits()
    for _ in range(100):
        assert policy.should_spin(now())
        policy.record(True, SPUN)
        assert policy.should_spin(now())
        policy.record(False, SPUN)
    assert policy.on and policy.spins == 200


@given(st.lists(st.booleans(), max_size=3000))
def test_wasted_spins_are_bounded_whatever_the_peer_does(answers_in_time: list[bool]) -> None:
    """Each wait either spins or not; a spin misses when the peer is slow. However
    the outcomes fall, spins that miss are at most two per hit (plus two), and
    spins while off at most one per MIN_BACKOFF waits."""
    policy, now = SpinPolicy(), Waits()
    waits_off = 0
    for in_time in answers_in_time:
        was_on = policy.on
        if not was_on:
            waits_off += 1
        if policy.should_spin(now()):
            policy.record(in_time, SPUN)
        assert MIN_BACKOFF <= policy.backoff <= MAX_BACKOFF
    assert policy.misses <= MISSES_TO_STOP * (policy.hits + 1) + policy.probes
    assert policy.probes <= waits_off // MIN_BACKOFF + 1
    assert policy.spins == policy.hits + policy.misses


@given(st.lists(st.tuples(st.floats(0, 0.0002), st.floats(0, 0.0003), st.booleans()),
                min_size=1, max_size=3000))
def test_spinning_takes_at_most_half_the_time_whatever_the_timing(
    steps: list[tuple[float, float, bool]],
) -> None:
    """Each step: a wait (maybe a spin of up to 200 us, hit or miss), then up to
    300 us of work. Over any run, spinning is at most MAX_SPIN_SHARE of the time,
    plus one spin per budget period (the one that crossed the line)."""
    policy = SpinPolicy()
    now = spun_total = 0.0
    for spin_for, work, hit in steps:
        if policy.should_spin(now):
            policy.record(hit, spin_for)
            now += spin_for
            spun_total += spin_for
        now += work
    longest = 0.0002
    periods = now / BUDGET_PERIOD + 1
    assert spun_total <= MAX_SPIN_SHARE * now + periods * longest + BUDGET_PERIOD * MAX_SPIN_SHARE


def test_a_peer_that_is_always_just_in_time_gets_half_the_time_not_all() -> None:
    """A trickle where every spin hits after 90 us and the work between is 10 us:
    without the budget the loop would spin 90% of the time."""
    policy = SpinPolicy()
    now = spun_total = 0.0
    while now < 1.0:
        if policy.should_spin(now):
            policy.record(True, 0.00009)
            now += 0.00009
            spun_total += 0.00009
        now += 0.00001
    assert policy.over_budget > 0
    assert 0.45 <= spun_total / now <= MAX_SPIN_SHARE + 0.01


# -- the spinner, on real sockets ------------------------------------------------


def test_the_spinner_sees_data_waiting_and_reports_a_miss_without_it() -> None:
    a, b = socket.socketpair()
    spinner = Spinner(0.0005)
    try:
        spinner.watch(b.fileno())
        assert not spinner.spin(0.0005)
        a.send(b"x")
        assert spinner.spin(10.0)  # returns at once: the byte is there
        assert b.recv(1) == b"x"  # spinning consumed nothing
        spinner.unwatch(b.fileno())
        a.send(b"y")
        assert not spinner.spin(0.0005)  # no longer watched
    finally:
        spinner.close()
        a.close()
        b.close()


def test_a_descriptor_number_reused_without_unwatch_is_watched_again() -> None:
    """A socket closed behind the spinner's back leaves the epoll set by itself;
    the next socket with the same number must be registered anew."""
    spinner = Spinner(0.0005)
    a, b = socket.socketpair()
    number = b.fileno()
    spinner.watch(number)
    a.close()
    b.close()  # no unwatch
    c, d = socket.socketpair()
    try:
        if number not in (c.fileno(), d.fileno()):
            pytest.skip("the kernel did not reuse the number")
        reader, writer = (c, d) if c.fileno() == number else (d, c)
        spinner.watch(reader.fileno())
        writer.send(b"x")
        assert spinner.spin(10.0)
    finally:
        spinner.close()
        c.close()
        d.close()


def test_before_sleep_spins_only_when_the_wait_is_longer_than_the_window() -> None:
    a, b = socket.socketpair()
    spinner = Spinner(0.0002)
    try:
        spinner.watch(b.fileno())
        spinner.before_sleep(0.0001)  # a deadline is due sooner: no spin
        assert spinner.policy.spins == 0
        a.send(b"x")
        spinner.before_sleep(1.0)
        assert (spinner.policy.spins, spinner.policy.hits) == (1, 1)
        off = Spinner(0.0)
        off.watch(b.fileno())  # a window of 0 watches nothing
        off.before_sleep(1.0)
        assert off.policy.spins == 0
        off.close()
    finally:
        spinner.close()
        a.close()
        b.close()


# -- the flusher, with a real membrane and synapse --------------------------------


async def _nap(msg: Nap) -> Nap:
    await trio.sleep(msg.seconds)
    return msg


def _receptors() -> Receptors:
    receptors = Receptors()
    receptors.add(Nap, _nap)
    return receptors


async def test_a_slow_cell_makes_the_loop_stop_spinning(
    sockdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cell that takes 20 ms per call (far past the window) costs at most
    MISSES_TO_STOP missed spins per answer that a spin did see, plus probes."""
    monkeypatch.setattr(_spin, "_usable_cpus", lambda: 2)
    monkeypatch.setenv(SPIN_ENV, "200")
    async with open_membrane("napper", _receptors(), socket_dir=sockdir, registry=REG):
        async with Synapse.grow("napper", socket_dir=sockdir, registry=REG) as syn:
            policy = Flusher.current().spinner.policy
            before = (policy.spins, policy.hits, policy.misses, policy.probes)
            for _ in range(20):
                assert await syn.fire(Nap(seconds=0.02)) == Nap(seconds=0.02)
            spins, hits, misses, probes = (
                now - was for now, was in zip(
                    (policy.spins, policy.hits, policy.misses, policy.probes), before,
                    strict=True,
                )
            )
    assert spins >= 1 and spins == hits + misses
    assert misses <= MISSES_TO_STOP * (hits + 1) + probes


async def test_spin_us_0_never_spins(sockdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SPIN_ENV, "0")
    async with open_membrane("napper", _receptors(), socket_dir=sockdir, registry=REG):
        async with Synapse.grow("napper", socket_dir=sockdir, registry=REG) as syn:
            for _ in range(50):
                await syn.fire(Nap(seconds=0))
            spinner = Flusher.current().spinner
            assert spinner.window == 0.0
            assert spinner.policy.spins == 0


async def test_a_bad_spin_window_fails_the_membrane_at_start(
    sockdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SPIN_ENV, "fast")
    with pytest.raises(ConfigError, match=SPIN_ENV):
        async with open_membrane("napper", _receptors(), socket_dir=sockdir, registry=REG):
            pass  # pragma: no cover
    assert not (sockdir / "napper.sock").exists()


def test_a_bad_spin_window_fails_the_synapse_when_it_connects(
    sockdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        async with open_membrane("napper", _receptors(), socket_dir=sockdir, registry=REG):
            os.environ[SPIN_ENV] = "-5"  # read by the client's own run below
            try:
                await trio.to_thread.run_sync(trio.run, client)
            finally:
                del os.environ[SPIN_ENV]

    async def client() -> None:
        async with Synapse.grow("napper", socket_dir=sockdir, registry=REG) as syn:
            await syn.fire(Nap(seconds=0))  # pragma: no cover

    monkeypatch.delenv(SPIN_ENV, raising=False)
    with pytest.raises(ConfigError, match=SPIN_ENV):
        trio.run(main)


def test_connection_churn_leaves_no_watched_socket_and_no_descriptor(
    sockdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack shape: a peer that opens and drops connections over and over. The
    spinner watches only open channels, and its epoll set goes with the run."""
    monkeypatch.setattr(_spin, "_usable_cpus", lambda: 2)
    monkeypatch.delenv(SPIN_ENV, raising=False)
    watched: list[int] = []

    async def main() -> None:
        async with open_membrane("napper", _receptors(), socket_dir=sockdir, registry=REG):
            for _ in range(60):
                async with Synapse.grow("napper", socket_dir=sockdir, registry=REG) as syn:
                    await syn.fire(Nap(seconds=0))
                    watched.append(len(Flusher.current().spinner._fds))
            await trio.sleep(0.05)  # the membrane notices the last close
            watched.append(len(Flusher.current().spinner._fds))

    gc.collect()
    before = open_fds()
    trio.run(main)
    gc.collect()
    assert 1 <= max(watched) <= 2  # the client's and the server's end of one connection
    assert watched[-1] == 0
    assert open_fds() == before


TRICKLE = """
import socket, struct, sys, time
import cbor2
sock = socket.socket(socket.AF_UNIX)
sock.connect(sys.argv[1])
hello = cbor2.dumps([0, 1, "trickle", {}, {"max_frame_size": 1 << 20}])
sock.sendall(struct.pack(">I", len(hello)) + hello)  # docs/protocol.md 4.1
sock.recv(65536)  # the membrane's hello: the connection is now served
sock.sendall(struct.pack(">I", 60000))  # then a frame that never completes
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    sock.send(b"\\xa0")
    time.sleep(0.00005)
sock.close()
"""


async def test_a_peer_trickling_bytes_cannot_make_the_loop_spin_more_than_half_the_time(
    sockdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack: a local client sends one byte every ~50-100 us (just inside the
    window), so every spin of the membrane's loop is a hit. The loop spins at
    most MAX_SPIN_SHARE of the time (plus one window per budget period), and
    keeps answering a legitimate caller meanwhile."""
    monkeypatch.setattr(_spin, "_usable_cpus", lambda: 2)
    monkeypatch.setenv(SPIN_ENV, "200")
    async with open_membrane("napper", _receptors(), socket_dir=sockdir, registry=REG):
        spinner = Flusher.current().spinner
        spun0, t0 = spinner.spun, time.perf_counter()
        attacker = await trio.lowlevel.open_process(
            [sys.executable, "-c", TRICKLE, str(sockdir / "napper.sock"), "0.6"]
        )
        async with Synapse.grow("napper", socket_dir=sockdir, registry=REG) as syn:
            answered = 0
            with trio.move_on_after(0.5):
                while True:
                    await syn.fire(Nap(seconds=0.001))
                    answered += 1
        await attacker.wait()
        elapsed = time.perf_counter() - t0
        spun = spinner.spun - spun0
    assert attacker.returncode == 0
    assert answered > 10
    periods = elapsed / BUDGET_PERIOD + 1
    assert spun <= MAX_SPIN_SHARE * elapsed + periods * 0.0002 + BUDGET_PERIOD

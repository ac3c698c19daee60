"""Adaptive spinning before the I/O wait: trade a little CPU for a cheap wake-up.

Theory of operation
-------------------
When a Trio loop has nothing to run it sleeps in ``epoll_wait``, and its CPU
core goes idle. A write from the peer then has to wake that core. On bare
metal that costs a few microseconds; in a virtual machine an idle virtual
CPU is halted by the hypervisor, and waking it costs tens of microseconds
each way (``scripts/wakeups.py`` measures about 35 us on the machine these
docs were written on, against 2 us when the core is busy). A call to a cell
that answers in 30 us then takes 130 us, most of it spent waking up.

So before the loop goes to sleep, the flusher may *spin*: it polls the
sockets of its channels without blocking (``epoll_wait`` with a zero
timeout on a private epoll set, yielding the core to any other runnable
thread in between) for at most the *window*, ``CELL_SPIN_US``
microseconds (default :data:`DEFAULT_SPIN_US`). If data arrives meanwhile
the loop does not sleep at all: the next I/O wait returns at once. If not,
the loop sleeps as it would have.

Spinning only pays when the peer answers within the window, so it is
adaptive (:class:`SpinPolicy`, a pure state machine):

* it starts *on*; a spin that sees data is a *hit*, one that runs out of
  window a *miss*;
* two misses in a row turn it *off*: waits then sleep at once;
* while off, one wait in ``backoff`` *probes* (spins once). A hit turns
  spinning back on; a miss doubles ``backoff``, from
  :data:`MIN_BACKOFF` up to :data:`MAX_BACKOFF` waits.

A loop whose peers answer slowly, or that is idle, therefore spins for at
most two windows and then one window per :data:`MAX_BACKOFF` waits; a loop
in a fast request/reply exchange spins on every wait and never pays the
wake-up. Whatever the peers do, spinning takes at most
:data:`MAX_SPIN_SHARE` of the time: once the spins of the current
:data:`BUDGET_PERIOD` add up to that share of it, the loop sleeps at once
until the next period. So a peer that trickles bytes just within the window
(each one a hit) can make a process spend half its time spinning, not all
of it. The flusher never spins when a deadline is due within the window,
when a task is already runnable (the wait's timeout is zero), or when the
process may use only one CPU (the peer would need the core we spin on).

``CELL_SPIN_US=0`` turns spinning off. The value is read once per Trio run,
when the run's first channel is made; a bad one is a
:class:`~cellmesh.errors.ConfigError` naming the variable.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from collections.abc import Mapping
from typing import Final

from ..errors import ConfigError

SPIN_ENV: Final = "CELL_SPIN_US"
#: The default window, in microseconds: a round trip of a small call between
#: two cellmesh processes costs about this much CPU on a 2-core VM.
DEFAULT_SPIN_US: Final = 100
#: The largest window accepted (a spin longer than this is a busy wait, not a
#: shortcut past a wake-up).
MAX_SPIN_US: Final = 10_000
#: Misses in a row that turn spinning off.
MISSES_TO_STOP: Final = 2
#: While off, the first probe comes this many waits after spinning stopped ...
MIN_BACKOFF: Final = 16
#: ... and every missed probe doubles the gap, up to this many waits.
MAX_BACKOFF: Final = 1024
#: Spinning takes at most this share of the time ...
MAX_SPIN_SHARE: Final = 0.5
#: ... counted over periods of this many seconds.
BUDGET_PERIOD: Final = 0.010


def spin_window_from_env(env: Mapping[str, str] | None = None) -> float:
    """The spin window in seconds from ``CELL_SPIN_US`` (0.0: do not spin).

    Unset or empty means :data:`DEFAULT_SPIN_US`. Anything but a whole number
    of microseconds from 0 to :data:`MAX_SPIN_US` raises ConfigError. A
    process allowed to run on only one CPU never spins.
    """
    env = os.environ if env is None else env
    raw = env.get(SPIN_ENV, "")
    if raw.strip() == "":
        micros = DEFAULT_SPIN_US
    else:
        text = raw.strip()
        if not text.isascii() or not text.isdigit():
            raise ConfigError(
                SPIN_ENV,
                f"must be a whole number of microseconds from 0 to {MAX_SPIN_US} "
                f"(0 turns spinning off), got {raw!r}",
            )
        micros = int(text)
        if micros > MAX_SPIN_US:
            raise ConfigError(
                SPIN_ENV, f"must be at most {MAX_SPIN_US} microseconds, got {micros}"
            )
    if micros == 0 or _usable_cpus() < 2:
        return 0.0
    return micros / 1e6


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux: trust the count
        return os.cpu_count() or 1


class SpinPolicy:
    """When to spin: on after a hit, off after :data:`MISSES_TO_STOP` misses,
    probing with exponential backoff while off (see the module doc).

    Also keeps the time budget (:data:`MAX_SPIN_SHARE` of each
    :data:`BUDGET_PERIOD`). Pure: it sees only the times and outcomes it is
    told (:meth:`should_spin`, :meth:`record`), so a test drives it exactly
    as the flusher does, with made-up clocks.
    """

    __slots__ = (
        "backoff", "hits", "misses", "on", "over_budget", "period_spun", "period_start",
        "probes", "skip", "spins", "spun", "streak",
    )

    def __init__(self) -> None:
        self.on = True
        self.streak = 0  # misses in a row while on
        self.backoff = MIN_BACKOFF
        self.skip = 0  # waits left before the next probe while off
        self.period_start = float("-inf")
        self.period_spun = 0.0  # seconds spun in the current budget period
        self.spun = 0.0  # seconds spun in all
        self.spins = 0
        self.hits = 0
        self.misses = 0
        self.probes = 0
        self.over_budget = 0  # waits that slept at once because the budget was spent

    def should_spin(self, now: float) -> bool:
        """About to sleep at time ``now`` (seconds): spin first? (Counts the wait.)"""
        if now - self.period_start >= BUDGET_PERIOD:
            self.period_start = now
            self.period_spun = 0.0
        elif self.period_spun >= BUDGET_PERIOD * MAX_SPIN_SHARE:
            self.over_budget += 1
            return False
        if self.on:
            return True
        self.skip -= 1
        if self.skip > 0:
            return False
        self.probes += 1
        return True

    def record(self, hit: bool, spun: float) -> None:
        """The spin :meth:`should_spin` allowed took ``spun`` seconds and ended
        with data (``hit``) or not."""
        self.spins += 1
        self.spun += spun
        self.period_spun += spun
        if hit:
            self.hits += 1
            self.on = True
            self.streak = 0
            self.backoff = MIN_BACKOFF
            return
        self.misses += 1
        if self.on:
            self.streak += 1
            if self.streak < MISSES_TO_STOP:
                return
            self.on = False
            self.streak = 0
        else:
            self.backoff = min(self.backoff * 2, MAX_BACKOFF)
        self.skip = self.backoff


class Spinner:
    """The sockets a flusher polls while it spins (a private epoll set).

    Registering a socket here does not consume its data or change how Trio
    waits on it: the set is level-triggered and only ever polled with a
    zero timeout.
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self.policy = SpinPolicy()
        self._epoll: select.epoll | None = None
        self._fds: set[int] = set()

    def watch(self, fd: int) -> None:
        """Poll ``fd`` for input while spinning (until :meth:`unwatch`)."""
        if self.window <= 0 or fd < 0:
            return
        if self._epoll is None:
            self._epoll = select.epoll()
        try:
            self._epoll.register(fd, select.EPOLLIN)
        except FileExistsError:  # registered already (a number reused before unwatch)
            pass
        except OSError:  # closed already, or not pollable: nothing to spin on
            return
        self._fds.add(fd)

    def unwatch(self, fd: int) -> None:
        """Stop polling ``fd`` (call before the socket is closed)."""
        if fd not in self._fds:
            return
        self._fds.discard(fd)
        if self._epoll is not None:
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(fd)

    @property
    def spun(self) -> float:
        """Seconds spent spinning so far (for tests and the bench)."""
        return self.policy.spun

    def close(self) -> None:
        """Forget every socket and close the epoll set."""
        self._fds.clear()
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None

    def before_sleep(self, timeout: float) -> None:
        """The loop is about to wait ``timeout`` seconds for I/O: spin first if it pays."""
        window = self.window
        if timeout < window or window <= 0 or not self._fds:
            return
        policy = self.policy
        start = time.perf_counter()
        if policy.should_spin(start):
            hit = self.spin(window)
            policy.record(hit, time.perf_counter() - start)

    def spin(self, window: float) -> bool:
        """Poll the watched sockets for up to ``window`` seconds; True once one is readable."""
        epoll = self._epoll
        if epoll is None:
            return False
        poll = epoll.poll
        yield_core = os.sched_yield
        clock = time.perf_counter
        end = clock() + window
        while True:
            if poll(0, 1):
                return True
            yield_core()  # let a thread waiting for this core (maybe our peer) run
            if clock() >= end:
                return False

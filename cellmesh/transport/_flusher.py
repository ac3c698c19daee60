"""End-of-pass flushing: what a connection queues in one scheduler pass leaves in one write.

Theory of operation
-------------------
Trio runs every runnable task once per *pass*, then waits for I/O. Sends
issued by many tasks in the same pass (sixteen callers each ``await
syn.fire(...)``, replies of handlers woken by one event) should leave as one
write, not one ``sendmsg`` per message: a syscall and a wake-up of the peer
cost far more than encoding a small message.

:class:`Flusher` is a Trio :class:`~trio.abc.Instrument` with a single hook,
``before_io_wait``, which Trio calls once per pass, after the pass's tasks
have run and before it waits for I/O. Code that queues bytes or messages on a
:class:`Flushable` marks it dirty (:meth:`Flusher.mark`); at the end of the
pass the flusher calls :meth:`Flushable.end_of_pass` on each dirty one,
which encodes what was queued and writes it with one ``sendmsg``. So the
write happens exactly where a task's own ``send`` would have left the
process (before the I/O wait), with no extra task switch, and a lone call is
not delayed at all.

A flushable may ask to stay dirty (return True) to let one more pass add to
the same write; the synapse does this for a task that sends signals in a
loop (see :mod:`cellmesh.transport._outbox`). The deferral is bounded by the
flushable itself, so a flushable that is marked and not deferred is written
within the pass that marked it.

When the pass leaves the loop with nothing to run, the flusher may spin
briefly before the I/O wait, polling its channels' sockets, so that a reply
arriving within microseconds does not have to wake an idle CPU (see
:mod:`cellmesh.transport._spin`; ``CELL_SPIN_US``).

One flusher serves a whole Trio run; it lives in a :class:`trio.lowlevel.RunVar`
(no module state), installs itself on first use and removes itself when the
last flushable that used it detaches, so a Trio program without cellmesh
connections pays nothing.

Contract for :meth:`Flushable.end_of_pass`: it runs inside the scheduler (not
in a task): it must not await, must not raise (an exception is turned into a
failure of that flushable through :meth:`Flushable.flush_failed`, never
allowed to reach Trio, which would disable the instrument) and must only do
non-blocking I/O. If it wakes a task (sets an event, reschedules a waiter)
it must call :meth:`Flusher.poke`: Trio computed the I/O wait's timeout
before calling the hook, so without a poke the loop could sleep in
``epoll_wait`` with that task runnable. A poke makes the flusher wake the
loop through its wakeup descriptor (``run_sync_soon``), so the I/O wait
returns at once.
"""

from __future__ import annotations

import contextlib
from typing import Final, Protocol

import trio

from ._spin import Spinner, spin_window_from_env


class Flushable(Protocol):
    """Something with queued output that is written once per scheduler pass."""

    def end_of_pass(self) -> bool:
        """Write what was queued this pass; True keeps it dirty for the next pass."""

    def flush_failed(self, exc: Exception) -> None:
        """``end_of_pass`` raised ``exc``: fail the connection (must not raise)."""


class Flusher(trio.abc.Instrument):
    """The per-run instrument that calls :meth:`Flushable.end_of_pass` once per pass."""

    def __init__(self) -> None:
        self._dirty: dict[Flushable, None] = {}
        self._users = 0
        self._installed = False
        self._in_hook = False
        self._poked = False
        self._token = trio.lowlevel.current_trio_token()
        self.spinner = Spinner(spin_window_from_env())  # ConfigError for a bad CELL_SPIN_US

    @staticmethod
    def current() -> Flusher:
        """The flusher of the current Trio run (created on first use).

        Raises :class:`~cellmesh.errors.ConfigError` if ``CELL_SPIN_US`` is bad.
        """
        try:
            return _FLUSHER.get()
        except LookupError:
            flusher = Flusher()
            _FLUSHER.set(flusher)
            return flusher

    def attach(self, fd: int) -> None:
        """A flushable whose socket is ``fd`` starts using this flusher (installs
        the instrument if needed; ``fd`` is polled while the loop spins)."""
        self._users += 1
        self.spinner.watch(fd)
        if not self._installed:
            trio.lowlevel.add_instrument(self)
            self._installed = True

    def detach(self, flushable: Flushable, fd: int) -> None:
        """``flushable`` (socket ``fd``, still open) is closing: forget it; uninstall
        once nobody uses the flusher."""
        self._dirty.pop(flushable, None)
        self.spinner.unwatch(fd)
        self._users -= 1
        if self._users <= 0 and self._installed:
            self._users = 0
            self._installed = False
            self._dirty.clear()
            self.spinner.close()
            with contextlib.suppress(KeyError):  # already removed by Trio
                trio.lowlevel.remove_instrument(self)

    def mark(self, flushable: Flushable) -> None:
        """Have ``flushable.end_of_pass()`` called at the end of this pass."""
        self._dirty[flushable] = None

    def poke(self) -> None:
        """A task was woken: if that happened inside the hook, keep the I/O wait short."""
        if self._in_hook:
            self._poked = True

    def after_run(self) -> None:
        """Trio's hook: the run is over; release the spinner's epoll set."""
        self.spinner.close()

    def before_io_wait(self, timeout: float) -> None:
        """Trio's hook: the pass is over; flush every dirty flushable once, then
        spin before a real wait if that pays (``timeout`` > 0: nothing to run)."""
        poked = self._flush_dirty(timeout) if self._dirty else False
        if timeout > 0 and not poked:  # the loop is going to sleep: spin first if it pays
            self.spinner.before_sleep(timeout)

    def _flush_dirty(self, timeout: float) -> bool:
        """Flush every dirty flushable once; True if one of them woke a task."""
        dirty, self._dirty = self._dirty, {}
        self._in_hook = True
        try:
            for flushable in dirty:
                try:
                    again = flushable.end_of_pass()
                except Exception as exc:  # never let it reach Trio (it would drop us)
                    flushable.flush_failed(exc)
                    continue
                if again:
                    self._dirty[flushable] = None
        finally:
            self._in_hook = False
        poked, self._poked = self._poked, False
        if poked and timeout > 0:
            self._token.run_sync_soon(_nothing)
        return poked


def _nothing() -> None:
    """Run by ``run_sync_soon`` only to make the pending I/O wait return at once."""


_FLUSHER: Final[trio.lowlevel.RunVar[Flusher]] = trio.lowlevel.RunVar("cellmesh_flusher")

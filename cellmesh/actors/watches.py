"""Monitors and links between cells: the pure bookkeeping, decisions as values.

Theory of operation
-------------------
Erlang's two ways for one process to learn of another's end, for cells:

* a **monitor** is one-way and one-shot: ``monitor(watcher, target)`` gives
  a reference; when ``target`` stops, ``watcher`` receives one ``CellDown``
  with that reference and the monitor is gone. Monitoring a cell that is not
  running yields ``CellDown(reason="noproc")`` at once. ``demonitor`` cancels.
* a **link** is two-way and lasts while both run: when either ends
  *abnormally*, the other is killed too -- unless it traps exits, in which
  case it receives ``CellDown`` (``ref`` 0) instead. A normal end just
  removes the link.

The monitors a cell holds end with its process (as in Erlang): a restarted
cell starts with none, so one that monitors in ``on_start`` never piles
them up.

Bounds (a cell is untrusted): a watcher may hold at most ``max_monitors``
monitors *plus* ``CellDown`` notices not yet delivered to it -- every
:class:`Notify` counts against its watcher until the driver reports it
:meth:`Watches.delivered` (or dropped) -- and a cell at most ``max_links``
links. Beyond either the request is refused with a
:class:`~cellmesh.actors.errors.RootRequestError` naming the cell and the
bound. So the notices waiting for one watcher never exceed
``max_monitors + max_links``, whatever it does or fails to read.

:class:`Watches` holds the state and returns what must happen as
:class:`Notify` and :class:`KillLinked` values; the root carries them out.
No I/O, no clock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Final

import attrs

from .control import CellDown
from .errors import RootRequestError

#: Default bound on the monitors (plus undelivered notices) of one cell.
DEFAULT_MAX_MONITORS: Final = 1024
#: Default bound on the links of one cell.
DEFAULT_MAX_LINKS: Final = 256


@attrs.frozen(kw_only=True)
class Notify:
    """Deliver ``down`` to cell ``watcher``."""

    watcher: str
    down: CellDown


@attrs.frozen(kw_only=True)
class KillLinked:
    """Kill cell ``name``: a cell linked to it (``cause``) failed."""

    name: str
    cause: str
    reason: str


Effect = Notify | KillLinked


@attrs.define(eq=False)
class Watches:
    """Monitors and links of one root, bounded per cell (see the module doc)."""

    max_monitors: int = DEFAULT_MAX_MONITORS
    max_links: int = DEFAULT_MAX_LINKS
    _monitors: dict[int, tuple[str, str]] = attrs.field(factory=dict, init=False)
    _held: Counter[str] = attrs.field(factory=Counter, init=False)
    _undelivered: Counter[str] = attrs.field(factory=Counter, init=False)
    _links: dict[str, set[str]] = attrs.field(factory=dict, init=False)
    _trapping: set[str] = attrs.field(factory=set, init=False)
    _next_ref: int = attrs.field(default=1, init=False)

    def load(self, watcher: str) -> int:
        """Monitors ``watcher`` holds plus notices not yet delivered to it."""
        return self._held[watcher] + self._undelivered[watcher]

    def monitor(self, watcher: str, target: str, *, alive: bool) -> tuple[int, list[Effect]]:
        """A new monitor's reference, and at once a ``noproc`` notice if ``target`` is down.

        Raises :class:`RootRequestError` when ``watcher`` is at ``max_monitors``.
        """
        if self.load(watcher) >= self.max_monitors:
            raise RootRequestError(
                watcher,
                f"holds {self._held[watcher]} monitors and {self._undelivered[watcher]} "
                f"undelivered CellDown notices, the most allowed ({self.max_monitors}, "
                "[root] max_monitors); demonitor some or let notices arrive first",
            )
        ref = self._next_ref
        self._next_ref += 1
        if not alive:
            return ref, [self._notify(watcher, CellDown(name=target, reason="noproc", ref=ref))]
        self._monitors[ref] = (watcher, target)
        self._held[watcher] += 1
        return ref, []

    def delivered(self, watcher: str, count: int = 1) -> None:
        """``count`` notices for ``watcher`` were delivered or dropped: they no longer count."""
        left = self._undelivered[watcher] - count
        if left > 0:
            self._undelivered[watcher] = left
        else:
            del self._undelivered[watcher]

    def _notify(self, watcher: str, down: CellDown) -> Notify:
        self._undelivered[watcher] += 1
        return Notify(watcher=watcher, down=down)

    def _drop(self, ref: int) -> tuple[str, str] | None:
        entry = self._monitors.pop(ref, None)
        if entry is not None:
            self._held[entry[0]] -= 1
            if self._held[entry[0]] <= 0:
                del self._held[entry[0]]
        return entry

    def demonitor(self, ref: int, *, watcher: str | None = None) -> None:
        """Cancel a monitor (no effect if it fired, never existed, or -- when
        ``watcher`` is given -- is not held by ``watcher``)."""
        entry = self._monitors.get(ref)
        if entry is not None and (watcher is None or entry[0] == watcher):
            self._drop(ref)

    def link(self, a: str, b: str, *, trap_exits: bool) -> None:
        """Link ``a`` and ``b``; ``trap_exits`` is ``a``'s flag (it asked).

        Raises :class:`RootRequestError` when a new link would give either
        cell more than ``max_links``.
        """
        for side in (a, b):
            links = self._links.get(side, set())
            if (b if side == a else a) not in links and len(links) >= self.max_links:
                raise RootRequestError(
                    side,
                    f"has {len(links)} links, the most allowed ({self.max_links}, "
                    "[root] max_links); unlink some first",
                )
        if trap_exits:
            self._trapping.add(a)
        else:
            self._trapping.discard(a)
        self._links.setdefault(a, set()).add(b)
        self._links.setdefault(b, set()).add(a)

    def set_trapping(self, name: str, trap_exits: bool) -> None:
        """Whether ``name`` traps exits, as its process announced: a failing linked cell
        then sends it a ``CellDown`` instead of killing it, also when the other side
        asked for the link (until ``name`` exits: its next process says it again)."""
        if trap_exits:
            self._trapping.add(name)
        else:
            self._trapping.discard(name)

    def unlink(self, a: str, b: str) -> None:
        """Remove the link between ``a`` and ``b`` (if any)."""
        self._links.get(a, set()).discard(b)
        self._links.get(b, set()).discard(a)

    def linked(self, name: str) -> frozenset[str]:
        """The cells linked with ``name``."""
        return frozenset(self._links.get(name, ()))

    def exited(
        self, name: str, reason: str, *, abnormal: bool, is_running: Callable[[str], bool]
    ) -> list[Effect]:
        """Cell ``name`` ended with ``reason``: fire its monitors, resolve its links.

        ``is_running(peer)`` says whether a linked peer still has a process to
        kill. The monitors it held and its links are gone.
        """
        effects: list[Effect] = []
        for ref, (watcher, target) in list(self._monitors.items()):
            if target == name:
                self._drop(ref)
                effects.append(self._notify(watcher, CellDown(name=name, reason=reason, ref=ref)))
            elif watcher == name:
                self._drop(ref)
        for peer in sorted(self._links.pop(name, set())):
            self._links.get(peer, set()).discard(name)
            if not abnormal:
                continue
            if peer in self._trapping:
                effects.append(self._notify(peer, CellDown(name=name, reason=reason, ref=0)))
            elif is_running(peer):
                effects.append(KillLinked(name=peer, cause=name, reason=reason))
        self._trapping.discard(name)
        return effects

    def forget(self, name: str) -> None:
        """Drop every monitor held by, or of, ``name``, and its links (the cell is gone)."""
        for ref, (watcher, target) in list(self._monitors.items()):
            if name in (watcher, target):
                self._drop(ref)
        self._undelivered.pop(name, None)
        for peer in self._links.pop(name, set()):
            self._links.get(peer, set()).discard(name)
        self._trapping.discard(name)


__all__ = [
    "DEFAULT_MAX_LINKS",
    "DEFAULT_MAX_MONITORS",
    "Effect",
    "KillLinked",
    "Notify",
    "Watches",
]

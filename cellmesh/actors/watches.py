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

:class:`Watches` holds the state and returns what must happen as
:class:`Notify` and :class:`KillLinked` values; the root carries them out.
No I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from .control import CellDown


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
    """Monitors and links of one root (see the module doc)."""

    _monitors: dict[int, tuple[str, str]] = attrs.field(factory=dict, init=False)
    _links: dict[str, set[str]] = attrs.field(factory=dict, init=False)
    _trapping: set[str] = attrs.field(factory=set, init=False)
    _next_ref: int = attrs.field(default=1, init=False)

    def monitor(self, watcher: str, target: str, *, alive: bool) -> tuple[int, list[Effect]]:
        """A new monitor's reference, and at once a ``noproc`` notice if ``target`` is down."""
        ref = self._next_ref
        self._next_ref += 1
        if not alive:
            return ref, [Notify(watcher=watcher, down=CellDown(name=target, reason="noproc",
                                                                ref=ref))]
        self._monitors[ref] = (watcher, target)
        return ref, []

    def demonitor(self, ref: int) -> None:
        """Cancel a monitor (no effect if it fired or never existed)."""
        self._monitors.pop(ref, None)

    def link(self, a: str, b: str, *, trap_exits: bool) -> None:
        """Link ``a`` and ``b``; ``trap_exits`` is ``a``'s flag (it asked)."""
        if trap_exits:
            self._trapping.add(a)
        else:
            self._trapping.discard(a)
        self._links.setdefault(a, set()).add(b)
        self._links.setdefault(b, set()).add(a)

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
        kill. The cell's own monitors of others stay; its links are gone.
        """
        effects: list[Effect] = []
        for ref, (watcher, target) in list(self._monitors.items()):
            if target == name:
                del self._monitors[ref]
                effects.append(Notify(watcher=watcher, down=CellDown(name=name, reason=reason,
                                                                     ref=ref)))
        for peer in sorted(self._links.pop(name, set())):
            self._links.get(peer, set()).discard(name)
            if not abnormal:
                continue
            if peer in self._trapping:
                effects.append(Notify(watcher=peer, down=CellDown(name=name, reason=reason,
                                                                  ref=0)))
            elif is_running(peer):
                effects.append(KillLinked(name=peer, cause=name, reason=reason))
        self._trapping.discard(name)
        return effects

    def forget(self, name: str) -> None:
        """Drop every monitor held by, or of, ``name``, and its links (the cell is gone)."""
        for ref, (watcher, target) in list(self._monitors.items()):
            if name in (watcher, target):
                del self._monitors[ref]
        for peer in self._links.pop(name, set()):
            self._links.get(peer, set()).discard(name)
        self._trapping.discard(name)


__all__ = ["Effect", "KillLinked", "Notify", "Watches"]

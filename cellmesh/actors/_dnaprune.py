"""Pruning the DNA cache: the root's thin driver of :mod:`cellmesh.actors._dnakeep`.

Theory of operation
-------------------
Each hot swap to new code adds an entry to the DNA cache; nothing else
removes one. :class:`DnaPruner` removes the entries no cell of the root
needs, keeping the ``[root] dna_cache_keep`` most recently used others
(docs/root.md, "The DNA cache"). A *pass*:

1. collects, in the Trio thread, the digests the root references
   (:func:`referenced_digests`): every slot's code in force and the one
   before it (a cell in any state: running, starting, dormant, restarting
   in its back-off, stopped but still known; replicas and dynamic children
   are slots too), and each template's code as last prepared;
2. in a worker thread: records that those entries are used now, lists the
   cache (:meth:`~cellmesh.actors.dna.DnaCache.entries`), asks
   :func:`~cellmesh.actors._dnakeep.entries_to_remove` which entries go
   (the digests a :class:`~cellmesh.actors.dna.DnaHold` pins count as
   referenced: a swap in flight holds its new code, the code it may roll
   back to and the code it replaces; a build holds its digest) and removes
   them (:meth:`~cellmesh.actors.dna.DnaCache.discard`, which checks the
   pins again under the lock a build pins under, so a digest pinned after
   step 1 is skipped).

A failure to read or remove is logged; a pass never fails the root.
Requests (:meth:`DnaPruner.request`) are coalesced: one task runs passes
until none is pending. Passes start once the mesh is up
(:meth:`DnaPruner.start`; one pass then, for what earlier runs left) and
end with the root's nursery: a root that stops removes nothing for the
cells it stops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final

import attrs
import trio

from ._cells import CellSlot
from ._dnakeep import entries_to_remove
from ._tasks import Background
from .dna import DnaCache

#: A swap's reply waits at most this long for the pass it asked for.
SETTLE_SECONDS: Final = 10.0
_TEMPLATE_KEY: Final = "templates."


def referenced_digests(slots: Iterable[CellSlot], templates: Iterable[str] = ()) -> set[str]:
    """The digests ``slots`` reference (code in force, the one before it) and ``templates``."""
    out = set(templates)
    for slot in slots:
        for entry in (slot.dna, slot.previous_dna):
            if entry is not None:
                out.add(entry.digest)
        if slot.dna_digest:
            out.add(slot.dna_digest)
    return out


def prune_pass(cache: DnaCache, referenced: set[str], keep: int) -> tuple[list[str], list[str]]:
    """One pass in a worker thread (module doc, step 2): (removed digests, failures)."""
    cache.touch(referenced)
    try:
        entries = cache.entries()
    except OSError as exc:
        return [], [f"cannot list {cache.cache_dir}: {exc}"]
    removed: list[str] = []
    failed: list[str] = []
    for digest in entries_to_remove(entries, referenced | cache.held(), keep=keep):
        try:
            if cache.discard(digest):
                removed.append(digest)
        except OSError as exc:
            failed.append(f"cannot remove {digest[:12]}: {exc}")
    return removed, failed


@attrs.define(eq=False)
class DnaPruner:
    """Removes the DNA cache entries the root's cells do not need (module doc)."""

    cache: DnaCache
    #: The root's slots (the live mapping: read at each pass).
    slots: Mapping[str, CellSlot]
    log: Callable[[str], None]
    #: Unreferenced entries kept (``[root] dna_cache_keep``).
    keep: int
    #: Each template's code as last prepared, by manifest key (``templates.X``).
    _templates: dict[str, str] = attrs.Factory(dict)
    _serving: bool = False
    _asked: int = 0
    _done: int = 0
    _wake: trio.Event = attrs.Factory(trio.Event)
    _progress: trio.Event = attrs.Factory(trio.Event)

    def prepared(self, slot: CellSlot) -> None:
        """Note the code ``slot`` was prepared with (a template's is kept for its children)."""
        if slot.key.startswith(_TEMPLATE_KEY) and slot.dna is not None:
            self._templates[slot.key] = slot.dna.digest

    def start(self, tasks: Background) -> None:
        """Run passes from now on (once the mesh is up), the first one at once."""
        if self._serving:
            return
        self._serving = True
        self.request()
        tasks.start_soon(self._serve, name="DNA cache pruning", restart=True)

    def request(self) -> None:
        """Ask for a pass (a reference was dropped); returns at once."""
        self._asked += 1
        self._wake.set()

    async def settled(self) -> None:
        """Return once every pass asked for so far has run (at once when none runs),
        or after :data:`SETTLE_SECONDS`."""
        target = self._asked
        with trio.move_on_after(SETTLE_SECONDS):
            while self._serving and self._done < target:
                await self._progress.wait()

    async def _serve(self) -> None:
        self._serving = True
        try:
            while True:
                if self._done >= self._asked:
                    self._wake = trio.Event()
                    await self._wake.wait()
                target = self._asked
                await self._pass()
                self._done = target
                self._progress.set()
                self._progress = trio.Event()
        finally:
            self._serving = False  # (until a restart, after a failure: it is logged)
            self._progress.set()

    async def _pass(self) -> None:
        referenced = referenced_digests(self.slots.values(), self._templates.values())
        removed, failed = await trio.to_thread.run_sync(
            prune_pass, self.cache, referenced, self.keep
        )
        if removed:
            shown = ", ".join(d[:12] for d in removed[:4]) + (" ..." if len(removed) > 4 else "")
            self.log(f"root: DNA cache: removed {len(removed)} unused "
                     f"entr{'y' if len(removed) == 1 else 'ies'} ({shown})")
        for line in failed:
            self.log(f"root: DNA cache: {line}")


__all__ = ["SETTLE_SECONDS", "DnaPruner", "prune_pass",
           "referenced_digests"]

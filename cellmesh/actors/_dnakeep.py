"""Which DNA cache entries to remove: the pure policy behind the root's cache pruning.

Theory of operation
-------------------
Every version of a cell's code that a root builds stays in the DNA cache
(:mod:`cellmesh.actors.dna`) as ``<cache_dir>/<digest>/``. Without pruning a
root that is swapped again and again grows its disk without end. The
driver (:mod:`cellmesh.actors._dnaprune`) lists the entries, each with the
time it was last used and whether its files are hard-linked elsewhere,
collects the digests its cells still need, and asks
:func:`entries_to_remove` which entries go.

The rule, in order:

1. an entry whose digest is *referenced* (the code of a cell or replica in
   any state, the version a swap may roll back to, a swap's new code while
   it is in flight, an entry being built) is kept;
2. an entry that is *linked* (its files have more hard links: a cell's DNA
   directory, perhaps another root's, still holds it) is kept;
3. of the other entries, the ``keep`` most recently used are kept, so a
   redeploy or rollback of a recent version does not rebuild it (ties are
   broken by digest, so the answer never depends on the listing order);
4. the rest are removed, oldest first.

Nothing here does I/O: times are plain numbers from whatever clock the
caller uses for all of them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import attrs


@attrs.frozen(kw_only=True)
class CachedEntry:
    """One cache entry as the driver found it."""

    digest: str
    #: When it was last used (any clock, the same for every entry of one call).
    last_used: float
    #: Its files have other hard links (some cell's DNA directory holds it).
    linked: bool = False


def entries_to_remove(
    entries: Iterable[CachedEntry], referenced: Collection[str], *, keep: int
) -> tuple[str, ...]:
    """The digests to remove (oldest first): unreferenced, unlinked, beyond the ``keep``
    most recently used of those (module doc). Raises ValueError for ``keep < 0``."""
    if keep < 0:
        raise ValueError(f"keep must be >= 0, got {keep}")
    spare = [e for e in entries if e.digest not in referenced and not e.linked]
    spare.sort(key=lambda e: (-e.last_used, e.digest))  # newest first
    return tuple(e.digest for e in reversed(spare[keep:]))


__all__ = ["CachedEntry", "entries_to_remove"]

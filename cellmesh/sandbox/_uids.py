"""One host uid per cell: the pool bwrap cells take their uids from when the root is root.

The kernel keeps several budgets per host uid, whatever the namespaces:
epoll watches (``fs.epoll.max_user_watches``), inotify instances and
watches, ``RLIMIT_NPROC``'s process count. Cells that share a uid share
those budgets, so one cell that spends a budget (an audit registered all
5.5 million epoll watches of uid 65534 from one sandbox) stops every
neighbour from starting Trio: its wake-up socket cannot be registered. With
a uid of its own, a cell can only exhaust its own budgets.

:class:`UidPool` hands out uids from a range (``CELL_UID_RANGE``, default
:data:`DEFAULT_UID_RANGE`). A cell's uid is chosen by a hash of its key (its
data dir, else its runtime dir and name), so it stays the same across
restarts and root restarts and its data dir is not chowned again; a uid held
by another live key of this pool is skipped (linear probing), so two cells of
one root never share a uid. Two roots on one host draw from the same range:
their cells collide only by chance of the hash (give each root its own range
to rule it out). Every process of a key's cells (a slot's two backend ids,
its standby, an old and a new version during a swap) shares the key's uid.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from typing import Final

import attrs

from .errors import SandboxConfigError, SandboxError

#: Default host uids for cells when the root runs as root: 65,536 uids
#: outside the ranges systemd assigns (system, regular, dynamic users,
#: nspawn containers and the foreign range).
DEFAULT_UID_RANGE: Final = (0x7A000000, 0x7A00FFFF)
#: The lowest uid a range may start at: below it are the host's own users.
MIN_UID: Final = 65536
#: The highest uid a range may end at (2**31 - 2): above, tools read uids as negative.
MAX_UID: Final = 2**31 - 2
_RANGE: Final = re.compile(r"([0-9]{1,10})\s*-\s*([0-9]{1,10})", re.ASCII)


def parse_uid_range(raw: str) -> tuple[int, int]:
    """``FIRST-LAST`` (inclusive, decimal) as a pair; SandboxConfigError naming the variable."""
    match = _RANGE.fullmatch(raw.strip())
    if match is None:
        raise SandboxConfigError(
            "CELL_UID_RANGE",
            f"{raw!r} is not FIRST-LAST (two decimal uids, e.g. 2046820352-2046885887)",
        )
    lo, hi = int(match[1]), int(match[2])
    if not MIN_UID <= lo <= hi <= MAX_UID:
        raise SandboxConfigError(
            "CELL_UID_RANGE",
            f"{raw!r} must satisfy {MIN_UID} <= FIRST <= LAST <= {MAX_UID} "
            "(uids below are the host's users; above, tools read them as negative)",
        )
    return lo, hi


@attrs.define(eq=False)
class UidPool:
    """Host uids ``first..last`` (inclusive), one per key; see the module doc."""

    first: int
    last: int
    _by_key: dict[str, int] = attrs.field(factory=dict, init=False)
    _taken: set[int] = attrs.field(factory=set, init=False)
    _holders: dict[str, set[str]] = attrs.field(factory=dict, init=False)
    _key_of: dict[str, str] = attrs.field(factory=dict, init=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> UidPool:
        """The pool ``CELL_UID_RANGE`` names, or the default range."""
        raw = env.get("CELL_UID_RANGE", "").strip()
        first, last = parse_uid_range(raw) if raw else DEFAULT_UID_RANGE
        return cls(first, last)

    @property
    def size(self) -> int:
        """How many uids the pool has."""
        return self.last - self.first + 1

    def __contains__(self, uid: object) -> bool:
        return isinstance(uid, int) and self.first <= uid <= self.last

    def __str__(self) -> str:
        return f"uids {self.first}-{self.last}"

    def acquire(self, key: str, holder: str) -> int:
        """The uid of ``key`` (the same while any holder keeps it), now also held by ``holder``.

        A holder that held another key releases that one first. Raises
        :class:`SandboxError` when every uid of the pool is held.
        """
        if self._key_of.get(holder, key) != key:
            self.release(holder)
        uid = self._by_key.get(key)
        if uid is None:
            uid = self._free_uid(key)
            self._by_key[key] = uid
            self._taken.add(uid)
        self._holders.setdefault(key, set()).add(holder)
        self._key_of[holder] = key
        return uid

    def release(self, holder: str) -> None:
        """``holder`` is gone: its key's uid is free once no holder keeps it."""
        key = self._key_of.pop(holder, None)
        if key is None:
            return
        holders = self._holders[key]
        holders.discard(holder)
        if not holders:
            del self._holders[key]
            self._taken.discard(self._by_key.pop(key))

    def uid_of(self, holder: str) -> int | None:
        """The uid ``holder`` holds, or None."""
        key = self._key_of.get(holder)
        return None if key is None else self._by_key[key]

    def _free_uid(self, key: str) -> int:
        size = self.size
        if len(self._taken) >= size:
            raise SandboxError(
                f"every host uid for cells is in use ({size} live cells, {self}): "
                "give CELL_UID_RANGE a larger range"
            )
        digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest()
        start = int.from_bytes(digest, "big") % size
        for step in range(size):
            uid = self.first + (start + step) % size
            if uid not in self._taken:
                return uid
        raise AssertionError("unreachable: a free uid exists")  # pragma: no cover


def default_uid_pool(env: Mapping[str, str]) -> UidPool | None:
    """A pool of per-cell uids when we are root (cells must not keep uid 0), else None.

    ``CELL_UID_RANGE`` is checked either way: a bad value is an error, not ignored.
    """
    pool = UidPool.from_env(env)
    return pool if os.geteuid() == 0 else None


__all__ = ["DEFAULT_UID_RANGE", "UidPool", "default_uid_pool", "parse_uid_range"]

"""Client sessions of a replicated cell: the deduplication table inside the replicated state.

Theory of operation
-------------------
Raft gives a replicated cell *at-least-once* delivery of a command when the
client retries (a leader may crash after committing a command and before
answering). Sessions turn that into *exactly once* (Raft dissertation 6.3):

* a client opens a session; its id is a random number in ``[1, 2**63)``
  the proposing replica drew and put in the log entry (so every replica
  gives the same id, and no client can guess another's: a session id is
  the capability to write in that session). An id already in use is
  probed onward deterministically. Older logs hold open-session entries
  without an id: those take the next number of a counter kept in the
  replicated state, as every id did before;
* every command carries ``(session, seq, floor)``: ``seq`` numbers the
  client's commands (any order, never reused), ``floor`` is the lowest
  ``seq`` the client still waits for (every answer below it has arrived);
* applying a command first asks the table (:meth:`SessionTable.admit`):
  a new ``seq`` is applied and its result recorded; a ``seq`` already
  recorded is *not* applied again -- its recorded result is the answer; a
  ``seq`` below the floor, or of a session the table no longer has, is not
  applied and answered with a typed verdict the client turns into an
  "outcome unknown" error.

Everything here is deterministic: it depends only on the commands in the
log and on the leader-assigned timestamps they carry, never on a clock of
its own, so every replica holds the same table. Memory is bounded three
ways: results below a session's floor are dropped as the floor rises; a
session keeps at most ``max_results`` results (the oldest go first, raising
its floor); at most ``max_sessions`` sessions exist (the least recently used
is expired first), and a session idle for ``ttl_ns`` of log time expires.
Counts alone do not bound bytes, so results are weighed too (their CBOR
size): one session keeps at most ``max_bytes / 8`` of them (its oldest go
first), and past ``max_bytes`` in all, the least recently used sessions
expire.

This module is pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from typing import Any, Final

import attrs
import cbor2

#: Defaults, overridable per cell class (see ``ReplicatedCell``).
DEFAULT_TTL_NS: Final = 3600 * 10**9
DEFAULT_MAX_SESSIONS: Final = 65536
DEFAULT_MAX_RESULTS: Final = 8192
DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024
#: One session keeps at most this share of ``max_bytes`` of results.
SESSION_SHARE: Final = 8
#: The largest session id (ids are in ``[1, 2**63)``).
_LAST_ID: Final = (1 << 63) - 1


class Verdict(enum.Enum):
    """What :meth:`SessionTable.admit` decided for one command."""

    APPLY = "apply"  #: new: apply it, then :meth:`SessionTable.record` the result
    DUPLICATE = "duplicate"  #: applied before: answer with the recorded result
    EXPIRED = "expired"  #: the session is unknown (expired or never opened): not applied
    STALE = "stale"  #: seq below the session's floor (its result is gone): not applied


@attrs.define(eq=False)
class Session:
    """One client's session: its floor, last activity (log time) and recorded results."""

    id: int
    floor: int = 0
    last_active: int = 0
    results: dict[int, Any] = attrs.Factory(dict)
    #: The CBOR size of each result, and their sum (derived: not in snapshots).
    sizes: dict[int, int] = attrs.Factory(dict)
    size: int = 0


@attrs.frozen(kw_only=True)
class SessionLimits:
    """The table's bounds; part of the replicated behaviour, so equal on every replica."""

    ttl_ns: int = DEFAULT_TTL_NS
    max_sessions: int = DEFAULT_MAX_SESSIONS
    max_results: int = DEFAULT_MAX_RESULTS
    max_bytes: int = DEFAULT_MAX_BYTES

    def __attrs_post_init__(self) -> None:
        if (self.ttl_ns <= 0 or self.max_sessions < 1 or self.max_results < 1
                or self.max_bytes < SESSION_SHARE):
            raise ValueError(
                "session limits need ttl_ns > 0, max_sessions >= 1, max_results >= 1 "
                f"and max_bytes >= {SESSION_SHARE}"
            )


class SessionTable:
    """The replicated deduplication table (dissertation 6.3).

    ``results`` values are opaque to the table (the caller stores encoded
    results); they must be CBOR-serializable for :meth:`to_wire`.
    """

    def __init__(self, limits: SessionLimits | None = None) -> None:
        self.limits = limits if limits is not None else SessionLimits()
        #: Least recently active first (log order), so expiry pops from the front.
        self._sessions: OrderedDict[int, Session] = OrderedDict()
        self.next_id = 1
        #: The CBOR size of every recorded result, summed over the sessions.
        self.result_bytes = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session: int) -> Session | None:
        """The session ``session``, or None."""
        return self._sessions.get(session)

    def open(self, now: int, proposed: int | None = None) -> int:
        """Open a new session at log time ``now``; return its id.

        The id is ``proposed`` (a random number from the log entry), or the
        next number after it that no open session has; with no ``proposed``
        (an entry of an older log), the next number of the counter. When
        ``max_sessions`` are open, the least recently active is expired.
        """
        self.expire(now)
        while len(self._sessions) >= self.limits.max_sessions:
            self._drop_oldest()
        if proposed is None:
            sid = self.next_id
            self.next_id += 1
            while sid in self._sessions:  # (a drawn id may sit on the counter's path)
                sid = self.next_id
                self.next_id += 1
        else:
            sid = proposed
            while sid in self._sessions:  # a collision (about 2**-47 per open at most)
                sid = sid % _LAST_ID + 1
        self._sessions[sid] = Session(id=sid, last_active=now)
        return sid

    def close(self, session: int) -> bool:
        """Forget ``session`` (its client said goodbye); True if it existed."""
        s = self._sessions.pop(session, None)
        if s is None:
            return False
        self.result_bytes -= s.size
        return True

    def _drop_oldest(self) -> None:
        """Expire the least recently active session."""
        _, s = self._sessions.popitem(last=False)
        self.result_bytes -= s.size

    def expire(self, now: int) -> int:
        """Drop sessions idle since before ``now - ttl_ns``; return how many."""
        horizon = now - self.limits.ttl_ns
        dropped = 0
        sessions = self._sessions
        while sessions:
            first = next(iter(sessions.values()))
            if first.last_active >= horizon:
                break
            self._drop_oldest()
            dropped += 1
        return dropped

    def admit(self, session: int, seq: int, floor: int, now: int) -> tuple[Verdict, Any]:
        """Decide what to do with command ``seq`` of ``session`` at log time ``now``.

        Returns ``(verdict, recorded result or None)``. A known session is
        touched (its activity and floor advance) whatever the verdict. The
        floor a client sends is trusted only up to ``seq`` (a client can only
        acknowledge what it sent before).
        """
        self.expire(now)
        s = self._sessions.get(session)
        if s is None:
            return Verdict.EXPIRED, None
        s.last_active = now
        self._sessions.move_to_end(session)
        self._raise_floor(s, min(floor, seq))
        if seq in s.results:
            return Verdict.DUPLICATE, s.results[seq]
        if seq < s.floor:
            return Verdict.STALE, None
        return Verdict.APPLY, None

    def record(self, session: int, seq: int, result: Any) -> None:
        """Record the result of a command :meth:`admit` said to apply.

        Then the bounds: the session's oldest results go (its floor rising
        past them) while it has more than ``max_results`` of them or they
        weigh more than ``max_bytes / 8`` (the newest always stays); then,
        while all results weigh more than ``max_bytes``, the least recently
        used sessions expire (this one is the most recently used).
        """
        s = self._sessions[session]
        self._put(s, seq, result)
        limits = self.limits
        share = limits.max_bytes // SESSION_SHARE
        while len(s.results) > limits.max_results or (s.size > share and len(s.results) > 1):
            self._raise_floor(s, min(s.results) + 1)
        while self.result_bytes > limits.max_bytes and len(self._sessions) > 1:
            self._drop_oldest()

    def _put(self, s: Session, seq: int, result: Any) -> None:
        size = len(cbor2.dumps(result))
        s.results[seq] = result
        s.sizes[seq] = size
        s.size += size
        self.result_bytes += size

    def _raise_floor(self, s: Session, floor: int) -> None:
        if floor <= s.floor:
            return
        s.floor = floor
        for seq in [q for q in s.results if q < floor]:
            del s.results[seq]
            size = s.sizes.pop(seq)
            s.size -= size
            self.result_bytes -= size

    # -- snapshots ---------------------------------------------------------

    def to_wire(self) -> list[Any]:
        """A deterministic CBOR-ready form: the same table gives the same value."""
        return [
            self.next_id,
            [
                [s.id, s.floor, s.last_active, [[q, s.results[q]] for q in sorted(s.results)]]
                for s in self._sessions.values()
            ],
        ]

    @classmethod
    def from_wire(cls, value: Any, limits: SessionLimits | None = None) -> SessionTable:
        """Rebuild a table from :meth:`to_wire`; ``ValueError`` on a malformed value."""
        table = cls(limits)
        try:
            next_id, sessions = value
            table.next_id = _uint(next_id, "next session id")
            for sid, floor, last_active, results in sessions:
                s = Session(
                    id=_uint(sid, "session id"),
                    floor=_uint(floor, "floor"),
                    last_active=_uint(last_active, "last activity"),
                )
                for seq, result in results:
                    table._put(s, _uint(seq, "seq"), result)
                table._sessions[s.id] = s
        except (TypeError, ValueError) as exc:
            raise ValueError(f"malformed session table: {exc}") from None
        return table


def _uint(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"{what} must be a non-negative integer")
    return value


__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_RESULTS",
    "DEFAULT_MAX_SESSIONS",
    "DEFAULT_TTL_NS",
    "Session",
    "SessionLimits",
    "SessionTable",
    "Verdict",
]

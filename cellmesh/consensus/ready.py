"""The ``Ready`` batch: everything the driver must persist, send and apply.

Theory of operation: the core never performs I/O; instead it accumulates the
effects of ticks, messages and proposals and hands them over in one
:class:`Ready` value. The ordering contract on :class:`Ready` (persist, then
send, then apply, then ``advance``) is what makes the protocol safe across
crashes; see :mod:`cellmesh.consensus.core` for the driver loop.
"""

from __future__ import annotations

import attrs

from cellmesh.consensus.messages import Message
from cellmesh.consensus.types import (
    Entry,
    HardState,
    JoinState,
    ReadState,
    Snapshot,
    SoftState,
)


@attrs.frozen(kw_only=True)
class Ready:
    """Everything the driver must do, in order, before calling :meth:`RaftCore.advance`.

    Ordering contract (as etcd's ``Ready``):

    1. Persist ``snapshot`` (if any), then ``entries`` (an entry at index ``i``
       replaces any stored entry at ``i`` and all after it), then
       ``hard_state`` (if not ``None``) -- and make them durable (fsync).
    2. Only **after** step 1 is durable, send ``messages``. A message may
       reveal a vote or an acknowledgement that must survive a crash.
       One exception is allowed (Raft thesis section 10.2.1): a *leader* whose
       Ready changes neither term nor vote may send its appends and
       heartbeats while its own write is in progress, because its unsaved
       entries count toward a commit only once this Ready is durable, and no
       commit that counts them is applied, answered or sent before that
       (``ready()`` is not called again until the save returns).
    3. Restore the state machine from ``snapshot`` (if any), then apply
       ``committed_entries`` in order (at most
       ``RaftConfig.max_committed_bytes_per_ready`` bytes of them, one at
       least: the rest come in the next Ready).
    4. Serve ``read_states`` once the state machine applied their index.
    5. Call ``advance(ready)``; do not call ``ready()`` again before that.
       ``tick``/``step``/``propose``/``read_index`` may be called while a
       Ready is being handled (for example while awaiting the fsync); their
       effects appear in the next Ready, and entries they replace are handed
       out again.

    ``committed_entries`` may include entries from this same Ready's
    ``entries`` (a single-voter leader commits what it alone holds), which is
    one reason step 3 must wait for step 1: a commit index is only a fact
    once the entries behind it are durable.

    ``soft_state`` is not ``None`` when the leader or role changed.
    ``join`` is not ``None`` when a joining node's :class:`JoinState` changed;
    persist it with step 1 (it only ever delays when the node may vote, so a
    crash that loses it is safe, but the node would rejoin from scratch).
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    snapshot: Snapshot | None = None
    committed_entries: tuple[Entry, ...] = ()
    messages: tuple[Message, ...] = ()
    read_states: tuple[ReadState, ...] = ()
    join: JoinState | None = None

    @property
    def must_sync(self) -> bool:
        """Whether step 1 has anything to make durable."""
        return (
            self.hard_state is not None
            or bool(self.entries)
            or self.snapshot is not None
            or self.join is not None
        )

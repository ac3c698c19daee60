"""Client sessions: calls a server deduplicates, so the synapse may resend them.

Theory of operation
-------------------
A server whose hello says ``"sessions": true`` (a replicated cell) applies
each call at most once per *session*, whatever the number of copies that
reach it (docs/protocol.md section 17; Raft dissertation 6.3). A synapse
connected to such a server sends every call through
:class:`ClientSessions` instead of directly:

1. On first use it opens a session: the call :class:`OpenSession`, answered
   with :class:`SessionOpened` carrying the id the server assigned.
2. Each message is encoded once and wrapped in a :class:`SessionCall`:
   ``session``, a ``seq`` unique within the session, the ``floor`` (the
   lowest ``seq`` of this session still waiting for an answer: the server
   may forget every answer below it), the inner protein's schema
   fingerprint and its CBOR body.
3. The wrapped calls go out as ordinary calls. If the connection breaks, or
   no answer arrives within ``retry_after`` seconds (a stopped server
   breaks nothing), the connection is abandoned and the *same* envelopes are
   sent again on a new one, until ``give_up_after`` seconds have passed.
   The server answers a copy it already applied with the recorded reply.
   Not when this client itself ended the connection because it refused
   what the server sent (a frame over its decode budget or frame limit, a
   malformed one): the server did answer, and would answer every copy the
   same way, so each call in flight there fails at once with
   :class:`~cellmesh.errors.ReplyRefused` (the connection reports it in
   place of :class:`~cellmesh.errors.CellUnavailable`, and only the latter
   is resent). The refused frame is not decoded, so which answers it held
   is unknown: every call in flight on that connection gets the error.
4. The answer is the inner reply, unwrapped: the caller of
   :meth:`~cellmesh.Synapse.fire` sees exactly what a plain call returns.
   A :class:`SessionFault` answer means the server could not apply the
   call in this session: ``"expired"`` (it no longer knows the session: if
   the call was never sent before, it is resent in a fresh session, since it
   was certainly not applied; otherwise its outcome is unknown) or
   ``"stale"`` (its ``seq`` is below the floor: unknown).

5. When the synapse closes with nothing in flight, it signals
   :class:`CloseSession` (best effort), so the server forgets the session at
   once instead of at its expiry.

Errors: :class:`~cellmesh.errors.OutcomeUnknown` when a call that left this
process got no answer after every retry (or a fault made it unknowable);
:class:`~cellmesh.errors.CellUnavailable` when it never left (the server
could not be reached at all); :class:`~cellmesh.errors.RemoteCellError` as
for plain calls (a final answer, never retried);
:class:`~cellmesh.errors.ReplyRefused` when an answer came but this client
refused it (step 3: a command may have taken effect, a query failed).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from typing import Any, Final, Protocol

import attrs
import cbor2
import trio

from ..errors import CellmeshError, CellUnavailable, OutcomeUnknown
from ..wire.proteins import EncodeContext, ProteinRegistry, fingerprint, protein

#: Pause between reconnection attempts while the server cannot be reached.
RECONNECT_DELAY: Final = 0.02
_EXPIRED: Final = "expired"


class SessionOptions(Protocol):
    """The synapse options the session layer reads."""

    retry_after: float
    give_up_after: float


class Synapse(Protocol):
    """What the session layer needs from the synapse it serves (no import cycle)."""

    name: str
    socket_path_text: str
    registry: ProteinRegistry

    @property
    def options(self) -> SessionOptions:
        """The synapse's options."""
        ...

    async def _fire(self, msgs: Sequence[Any], count: int) -> list[Any]:
        """Send ``msgs`` as plain calls; their replies (raises on a failed call)."""
        ...

    async def _fire_one(self, msg: Any) -> Any:
        """Send one plain call; its reply (raises on a failed call)."""
        ...

    async def _connection(self) -> Any:
        """A live connection (connecting if needed); CellUnavailable if none."""
        ...

    def _connected(self) -> bool:
        """True if a live connection is up now (:meth:`_connection` would not wait)."""
        ...

    def _abandon_connection(self, reason: str) -> None:
        """Give up the current connection: its calls fail, the next call reconnects."""

    def signal_nowait(self, msg: Any) -> None:
        """Queue a one-way message now, or raise ``trio.WouldBlock``."""


@protein("cellmesh.session.Open")
class OpenSession:
    """Ask the server for a new session; answered with :class:`SessionOpened`."""


@protein("cellmesh.session.Opened")
class SessionOpened:
    """The id of the session the server opened (never reused by that server)."""

    session: int


@protein("cellmesh.session.Call")
class SessionCall:
    """One call inside a session: the inner protein's body, and its place in the session.

    ``body`` is the CBOR encoding of the inner protein body (section 11 of
    the protocol); ``fingerprint`` its schema fingerprint, checked by the
    server as a hello would.
    """

    session: int
    seq: int
    floor: int
    fingerprint: str
    body: bytes


@protein("cellmesh.session.Close")
class CloseSession:
    """The client is done with ``session`` (a signal; the server may forget it)."""

    session: int


@protein("cellmesh.session.Fault")
class SessionFault:
    """The server could not apply a session call: ``kind`` is ``"expired"`` or ``"stale"``."""

    kind: str
    detail: str


@attrs.define(eq=False)
class _State:
    """One opened session: its id, next seq and the seqs still waiting (in order)."""

    id: int
    next_seq: int = 1
    waiting: dict[int, None] = attrs.Factory(dict)

    def take(self) -> int:
        seq = self.next_seq
        self.next_seq = seq + 1
        self.waiting[seq] = None
        return seq

    def floor(self) -> int:
        return next(iter(self.waiting), self.next_seq)


@attrs.define(eq=False)
class _Pending:
    """One message of a call in progress."""

    fingerprint: str
    body: bytes
    state: _State | None = None
    seq: int = 0
    sent: bool = False  #: a copy left this process
    resent: bool = False  #: the copy in flight is not the first

    def release(self) -> None:
        if self.state is not None:
            self.state.waiting.pop(self.seq, None)
            self.state = None


@attrs.define(eq=False)
class ClientSessions:
    """A synapse's session with a sessions-capable server (one per synapse)."""

    _state: _State | None = None
    _opening: trio.Lock = attrs.Factory(trio.Lock)

    @property
    def session(self) -> int | None:
        """The current session id, or None before the first call."""
        return self._state.id if self._state is not None else None

    async def _current(self, syn: Synapse, deadline: float) -> _State:
        """The open session (opened now if there is none)."""
        state = self._state
        if state is not None:
            return state
        async with self._opening:
            state = self._state
            if state is None:
                state = self._state = _State(id=await self._open(syn, deadline))
            return state

    async def _open(self, syn: Synapse, deadline: float) -> int:
        """Ask the server for a session, retrying until ``deadline``."""
        reason = "no answer"
        while trio.current_time() < deadline:
            with trio.move_on_after(min(syn.options.retry_after, deadline - trio.current_time())):
                try:
                    reply = (await syn._fire([OpenSession()], 1))[0]
                except CellUnavailable as exc:
                    reason = exc.reason
                    await trio.sleep(RECONNECT_DELAY)
                    continue
                if not isinstance(reply, SessionOpened):
                    raise CellUnavailable(
                        syn.name, syn.socket_path_text,
                        f"the cell answered a session request with {type(reply).__name__}",
                    )
                return reply.session
            syn._abandon_connection("no answer to a session request in time")
        raise CellUnavailable(syn.name, syn.socket_path_text, f"could not open a session: {reason}")

    def goodbye(self, syn: Synapse) -> None:
        """The synapse closes: tell the server it may forget the session (best effort)."""
        state, self._state = self._state, None
        if state is not None and not state.waiting:
            with suppress(trio.WouldBlock, CellmeshError):
                syn.signal_nowait(CloseSession(session=state.id))

    async def call(self, syn: Synapse, msgs: list[Any]) -> list[Any]:
        """Send ``msgs`` in the session and return their replies in order (see module doc)."""
        opts = syn.options
        pending = [
            _Pending(fingerprint=fingerprint(type(m)),
                     body=cbor2.dumps(syn.registry.encode(m, EncodeContext())))
            for m in msgs
        ]
        results: list[Any] = [None] * len(msgs)
        todo = list(range(len(msgs)))
        deadline = trio.current_time() + opts.give_up_after
        try:
            while todo:
                await self._assign(syn, [pending[i] for i in todo], deadline)
                replies = await self._attempt(syn, [pending[i] for i in todo], deadline)
                if replies is None:
                    continue  # nothing answered: resend the same envelopes
                again = []
                for i, reply in zip(todo, replies, strict=True):
                    item = pending[i]
                    if not isinstance(reply, SessionFault):
                        results[i] = reply
                        item.release()
                        continue
                    if reply.kind == _EXPIRED and not item.resent:
                        # Certainly not applied: the server never knew this session
                        # when the copy arrived. Resend it in a fresh session.
                        stale = item.state
                        item.release()
                        if self._state is stale:
                            self._state = None
                        item.sent = False
                        again.append(i)
                        continue
                    raise OutcomeUnknown(syn.name, f"session {reply.kind}: {reply.detail}")
                todo = again
            return results
        finally:
            for item in pending:
                item.release()

    async def _assign(self, syn: Synapse, items: list[_Pending], deadline: float) -> None:
        """Give every item without a session a seq in the current session."""
        for item in items:
            if item.state is None:
                state = await self._current(syn, deadline)
                item.state = state
                item.seq = state.take()

    async def _attempt(
        self, syn: Synapse, items: list[_Pending], deadline: float
    ) -> list[Any] | None:
        """One send of ``items``; their replies, or None to try again."""
        now = trio.current_time()
        if now >= deadline:
            if any(item.sent for item in items):
                raise OutcomeUnknown(
                    syn.name, f"no answer after retrying for {syn.options.give_up_after} s"
                )
            raise CellUnavailable(syn.name, syn.socket_path_text, "gave up reconnecting")
        if not syn._connected():  # (a cancel scope costs more than the check)
            with trio.move_on_after(deadline - now) as connecting:
                try:
                    await syn._connection()
                except CellUnavailable:
                    await trio.sleep(min(RECONNECT_DELAY, max(0.0, deadline - now)))
                    return None  # nothing left this process
            if connecting.cancelled_caught:
                return None  # no hello before the deadline: nothing left this process
        envelopes = []
        for item in items:
            state = item.state
            assert state is not None
            envelopes.append(SessionCall(session=state.id, seq=item.seq, floor=state.floor(),
                                         fingerprint=item.fingerprint, body=item.body))
            item.resent = item.sent
            item.sent = True
        with trio.move_on_after(min(syn.options.retry_after, deadline - now)):
            try:
                if len(envelopes) == 1:
                    return [await syn._fire_one(envelopes[0])]
                return await syn._fire(envelopes, len(envelopes))
            except CellUnavailable:
                await trio.sleep(RECONNECT_DELAY)
                return None
        syn._abandon_connection("no answer in time: resending on a new connection")
        return None


__all__ = [
    "ClientSessions",
    "CloseSession",
    "OpenSession",
    "SessionCall",
    "SessionFault",
    "SessionOpened",
]

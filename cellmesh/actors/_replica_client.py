"""What a replica serves on the group's client socket: commands, queries, sessions.

Theory of operation
-------------------
:func:`client_handlers` builds the receptor table a replica's client
membrane serves (it announces sessions in its hello):

* ``SessionCall`` (every call of a cellmesh synapse, docs/protocol.md
  section 17): the inner protein is looked up by wire name and checked
  against the fingerprint the client sent. A command becomes the op
  ``[0, session, seq, floor, body]`` (the client's encoded body goes into
  the log as it came); a query runs as below. The answer is the inner reply,
  or a ``SessionFault`` when the state machine could not apply the command
  in this session.
* ``OpenSession`` / ``CloseSession``: ops of their own, through the log.
* a command protein sent plainly (a client that does not speak sessions, or
  a signal): an op outside any session (``session`` 0) -- applied once per
  copy received; no deduplication.
* a query protein: waits for the :class:`~cellmesh.actors._replica_submit.ReadBarrier`
  (unless the query is marked ``stale``), then calls the user's method.

A command whose ``apply`` raised is answered with :class:`ApplyFailed` (the
caller gets a :class:`~cellmesh.RemoteCellError` whose message names the
original exception); every replica raised the same.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Final

import attrs
import cbor2

from ..errors import (
    CellmeshError,
    MalformedFrame,
    ProteinError,
    SchemaMismatch,
    UnknownProtein,
)
from ..transport._dispatch import Handler
from ..transport.session import (
    CloseSession,
    OpenSession,
    SessionCall,
    SessionFault,
    SessionOpened,
)
from ..wire import codec
from ..wire._cbor import PayloadDecoder
from ..wire.proteins import DecodeContext, EncodeContext, ProteinRegistry, fingerprint
from ._replica_entries import (
    MAX_COUNTER,
    ResultKind,
    close_session_op,
    command_op,
    open_session_op,
)
from ._replica_types import QuerySpec, StateMachineCell


class ApplyFailed(CellmeshError):
    """The state machine's ``apply`` raised on every replica; the command changed nothing
    it did not change before raising. ``type_name`` and ``detail`` describe the exception."""

    def __init__(self, type_name: str, detail: str) -> None:
        super().__init__(f"{type_name}: {detail}")
        self.type_name = type_name
        self.detail = detail


class NotServed(CellmeshError):
    """The group has no command or query for this protein."""

    def __init__(self, cell: str, protein: str) -> None:
        super().__init__(f"replicated cell {cell!r} has no command or query {protein}")
        self.protein = protein


Submit = Callable[[list[Any]], Awaitable[list[Any]]]


@attrs.define(eq=False)
class ClientSide:
    """The client-facing handlers of one replica (see module docstring)."""

    cell: StateMachineCell
    name: str
    registry: ProteinRegistry
    submit: Submit
    read_barrier: Callable[[], Awaitable[None]]
    _commands: frozenset[type] = attrs.field(init=False)
    _queries: dict[type, QuerySpec] = attrs.field(init=False)
    _decode_ctx: DecodeContext = attrs.Factory(DecodeContext)
    _bodies: PayloadDecoder = attrs.Factory(PayloadDecoder)
    _max_command: int = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        cls = type(self.cell)
        self._commands = frozenset(cls.commands)
        self._queries = dict(cls._query_table)
        options = getattr(cls, "membrane_options", {})  # a Cell's; a bare state machine has none
        limit = options.get("max_frame_size", codec.DEFAULT_MAX_FRAME_SIZE)
        self._max_command = limit if type(limit) is int else codec.DEFAULT_MAX_FRAME_SIZE

    def _check_size(self, size: int, what: str) -> None:
        """A command goes into the log whole, on every replica: it may be no larger
        than a frame of this cell's client socket, even when its bytes came as a
        vesicle (which the frame limit does not see)."""
        if size > self._max_command:
            raise ProteinError(
                f"{what} of {size:,} bytes is larger than this replicated cell's frame "
                f"limit ({self._max_command:,} bytes; membrane_options max_frame_size): "
                "a command is stored in the log whole"
            )

    def _decode_body(self, data: bytes) -> Any:
        """A session call's encoded body, decoded within the wire's decode budget
        (docs/security.md): it arrives as opaque bytes, so the frame's own check
        never looked inside it."""
        try:
            body = self._bodies.decode(memoryview(data))
        except MalformedFrame as exc:
            raise ProteinError(f"session call body refused: {exc}") from None
        if self._bodies.tags.count:
            raise ProteinError("a session call body may not hold vesicle references")
        return body

    def handlers(self) -> dict[type, Handler]:
        """Protein type -> handler, for the client membrane."""
        table: dict[type, Handler] = {
            SessionCall: self.session_call,
            OpenSession: self.open_session,
            CloseSession: self.close_session,
        }
        for command in self._commands:
            table[command] = self.plain_command
        for proto in self._queries:
            table[proto] = self.plain_query
        return table

    # -- results ---------------------------------------------------------------

    def _reply(self, result: list[Any]) -> Any:
        kind = result[0]
        if kind == ResultKind.OK:
            body = result[1]
            return None if body is None else self.registry.decode(body, self._decode_ctx)
        if kind == ResultKind.RAISED:
            raise ApplyFailed(str(result[1]), str(result[2]))
        if kind == ResultKind.NOT_APPLIED:
            return SessionFault(kind=str(result[1]), detail=_FAULTS.get(result[1], ""))
        raise CellmeshError(f"unexpected result kind {kind} for a command")

    # -- sessions --------------------------------------------------------------

    async def session_call(self, call: SessionCall) -> Any:
        """One call inside a client session: a command through the log, or a query."""
        for value in (call.session, call.seq, call.floor):
            if not 0 <= value < MAX_COUNTER:
                raise ValueError("session, seq and floor must be in [0, 2**63)")
        self._check_size(len(call.body), "a session call body")
        body = self._decode_body(call.body)
        if type(body) is not list or not body or type(body[0]) is not str:
            raise ProteinError("session call body is not a protein body")
        cls = self.registry.get(body[0])
        if cls is None:
            raise UnknownProtein(body[0])
        ours = fingerprint(cls)
        if call.fingerprint != ours:
            raise SchemaMismatch(body[0], ours, call.fingerprint)
        if cls in self._commands:
            if call.session == 0:
                raise ValueError("a session call needs a session id (from OpenSession)")
            op = command_op(call.session, call.seq, call.floor, bytes(call.body))
            return self._reply(await self.submit(op))
        spec = self._queries.get(cls)
        if spec is None:
            raise NotServed(self.name, body[0])
        msg = self.registry.decode(body, self._decode_ctx)
        return await self._query(msg, spec)

    async def open_session(self, msg: OpenSession) -> SessionOpened:
        """Open a session (an op through the log, carrying a random id drawn here:
        a session id is the capability to write in that session, so it must not
        be guessable; the log makes every replica give the same)."""
        del msg
        result = await self.submit(open_session_op(secrets.randbelow(MAX_COUNTER - 1) + 1))
        if result[0] != ResultKind.SESSION:
            raise CellmeshError(f"unexpected result {result!r:.60} for OpenSession")
        return SessionOpened(session=int(result[1]))

    async def close_session(self, msg: CloseSession) -> None:
        """Forget a session (the client is done with it)."""
        if 0 < msg.session < MAX_COUNTER:
            await self.submit(close_session_op(msg.session))

    # -- plain calls -------------------------------------------------------------

    async def plain_command(self, msg: Any) -> Any:
        """A command outside any session: applied once per copy received."""
        body = cbor2.dumps(self.registry.encode(msg, EncodeContext()))
        self._check_size(len(body), f"a {type(msg).__qualname__} command")
        return self._reply(await self.submit(command_op(0, 0, 0, body)))

    async def plain_query(self, msg: Any) -> Any:
        """A query sent plainly."""
        return await self._query(msg, self._queries[type(msg)])

    async def _query(self, msg: Any, spec: QuerySpec) -> Any:
        if not spec.stale:
            await self.read_barrier()
        return getattr(self.cell, spec.method)(msg)


_FAULTS: Final = {
    "expired": "the group does not know this session (expired or never opened)",
    "stale": "the sequence number is below the session's floor (already answered)",
}


__all__ = ["ApplyFailed", "ClientSide", "NotServed"]

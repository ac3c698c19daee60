"""The client side of one connection as a sans-I/O core: hello, credit, calls, replies.

Theory of operation
-------------------
A :class:`ClientCore` holds everything a client connection *decides*,
and does no I/O and no waiting: the driver (the asyncio client,
:mod:`cellmesh.transport.aio`) owns the socket, feeds the core the items of
every decoded frame, sends the bytes the core returns, and parks its callers
until the core completes their :class:`ReplyBatch`.

Its receiving half, :class:`ClientReceiver`, is shared with the Trio
synapse (:mod:`cellmesh.transport.synapse`), whose connection has its own
sending half (the end-of-pass outbox) and mixes the receiver in: one copy of
how replies, columns of replies, errors, credit and goaway are handled, for
both drivers.

* **Hello.** :meth:`ClientCore.hello_bytes` is our first frame;
  :meth:`ClientCore.accept_hello` checks the cell's first frame
  (:func:`parse_hello`) and takes its name, fingerprints, frame limit and
  initial credit.
* **Sending.** :meth:`ClientCore.frame_calls` cuts the next messages of an
  :class:`~cellmesh.wire.batching.OutboundBatch` into one frame within the
  peer's frame limit and the call credit, registers the calls under fresh
  ids and takes their credit (docs/protocol.md section 7: one call each, the
  frame's payload bytes); :meth:`ClientCore.frame_signals` the same for
  signals; :meth:`ClientCore.cancel` marks calls given up and returns the
  ``cancel`` frame (their final answers are discarded when they come).
* **Receiving.** :meth:`ClientCore.receive` applies a frame's items: replies
  and columns of replies fill the batches (decoded with the registry; a body
  that does not decode fails that call with its ``ProteinError``), error
  items fail them (:func:`~cellmesh.errors.remote_error`: the class by the
  code), credit adds credit, goaway starts draining. A batch whose last call
  is answered is completed through its ``on_done`` callback, once.
  Anything a cell may not send raises
  :class:`~cellmesh.errors.RemoteProtocolError` (the driver answers with
  :meth:`ClientCore.protocol_error_frame` and closes); a connection-level
  error the cell reports raises :class:`CellEndedConnection` (the driver
  closes).
* **Failure.** :meth:`ClientCore.fail` completes every pending batch with
  the given error (the connection broke). When the connection ends because
  this client refused what a cell that deduplicates retries sent (a frame
  over the decode budget or the frame limit, a malformed one),
  :meth:`ClientReceiver.fail_refused` fails every call in flight with
  :class:`~cellmesh.errors.ReplyRefused` instead: the cell answered, and
  resending would bring the same frame back.

Vesicles: the driver claims a frame's descriptors and builds the decoding
context with :func:`vesicle_context` (memfds are mapped read-only); bytes
fields at the threshold travel as memfds the driver sends with SCM_RIGHTS.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from ..errors import (
    CellmeshError,
    ErrorCode,
    FrameTooLarge,
    HandshakeError,
    LocalProtocolError,
    ProteinError,
    RemoteProtocolError,
    ReplyRefused,
    VersionMismatch,
    VesicleError,
    remote_error,
)
from ..wire import codec
from ..wire._fields import Bad
from ..wire.batching import OutboundBatch
from ..wire.codec import PROTOCOL_VERSION, Error, Hello, Kind, VesicleRef
from ..wire.proteins import DecodeContext, ProteinRegistry
from ..wire.vesicle import MappedBudget, OverBudget, map_vesicle


class ReplyBatch:
    """The answers to one caller's calls (one ``fire``, or all of a ``fire_many``).

    ``results[i]`` is the i-th call's reply; ``errors`` maps an index to its
    error. :meth:`_complete` runs once, when every call is answered or the
    connection failed: it calls ``on_done`` (a driver may override it
    instead); :meth:`outcome` then returns the replies or raises the error of
    the first failed call. ``done`` set by the driver (a caller that gave up)
    suppresses the completion.
    """

    __slots__ = ("done", "errors", "on_done", "remaining", "results")

    def __init__(self, count: int, on_done: Callable[[ReplyBatch], None] | None = None) -> None:
        self.remaining = count
        self.results: list[Any] = [None] * count
        self.errors: dict[int, BaseException] = {}
        self.on_done = on_done
        self.done = False

    def outcome(self) -> list[Any]:
        """The replies in order, or raise the first failed call's error."""
        if self.errors:
            raise self.errors[min(self.errors)]
        return self.results

    def _answer(self, index: int, value: Any, error: BaseException | None) -> None:
        if error is not None:
            self.errors[index] = error
        self.results[index] = value
        self.remaining -= 1
        if self.remaining == 0:
            self._complete()

    def _fail(self, index: int, exc: BaseException) -> None:
        """The connection failed before call ``index`` was answered: complete with ``exc``."""
        self.errors[index] = exc
        self._complete()

    def _complete(self) -> None:
        if not self.done:
            self.done = True
            if self.on_done is not None:
                self.on_done(self)


#: A call the caller gave up: its final answer is discarded.
_CANCELLED: Final = (None, -1)


class CellEndedConnection(Exception):
    """The cell reported a connection-level error: it closes; nothing is sent back."""


#: The reason of a :class:`~cellmesh.errors.CellUnavailable` for a socket that is not there.
NO_SOCKET: Final = "no such socket (is the cell running?)"
#: ... and for a peer that accepted the connection but sent no hello in time.
NO_HELLO: Final = "no hello from the cell in time"


def connect_failure(exc: OSError) -> str:
    """Why connecting to a cell's socket failed, for :class:`~cellmesh.errors.CellUnavailable`."""
    return {
        errno.ENOENT: NO_SOCKET,
        errno.ECONNREFUSED: "connection refused (nothing is listening)",
    }.get(exc.errno or 0, f"connect failed: {exc.strerror or exc}")


def hello_frame(hello: Hello) -> bytes:
    """Our hello as a frame; LocalProtocolError when it would exceed MAX_HELLO_SIZE.

    A hello lists every protein the registry knows (about 45 bytes each): a
    process that knows more than about 1400 cannot say hello (docs/protocol.md
    section 2).
    """
    data = codec.frame_bytes(hello.to_wire())
    size = len(data) - codec.HEADER_SIZE
    if size > codec.MAX_HELLO_SIZE:
        raise LocalProtocolError(
            f"our hello is {size} bytes ({len(hello.proteins)} proteins), more than the "
            f"{codec.MAX_HELLO_SIZE} a hello may have; use a registry with fewer proteins",
            code=ErrorCode.BAD_HANDSHAKE,
        )
    return data


def first_frame_error(exc: RemoteProtocolError, peer: str) -> HandshakeError:
    """What a protocol error in the peer's first frame is: BAD_HANDSHAKE, saying why.

    Whatever is wrong with the first frame -- its size, its CBOR, its kind --
    the handshake failed (docs/protocol.md section 5.1).
    """
    if isinstance(exc, HandshakeError):
        return exc
    if isinstance(exc, FrameTooLarge):
        return HandshakeError(
            f"the first frame from {peer} is {exc.length} bytes; a hello may have at most "
            f"{codec.MAX_HELLO_SIZE}"
        )
    return HandshakeError(f"the first frame from {peer} is not a hello: {exc}")


def parse_hello(items: list[list[Any]], peer: str) -> Hello:
    """The peer's hello from its first frame's items, its version checked.

    An error item in its place means the peer refused us:
    :class:`~cellmesh.errors.HandshakeError` carrying its code and message.
    ``peer`` names the peer in messages.
    """
    if len(items) == 1 and items[0][0] == Kind.ERROR:
        raise HandshakeError(f"{peer} refused the connection: {items[0][4]}", code=items[0][2])
    if len(items) != 1 or items[0][0] != Kind.HELLO:
        raise HandshakeError(f"expected a hello from {peer} first")
    hello = Hello.from_wire(items[0])
    if hello.version != PROTOCOL_VERSION:
        raise VersionMismatch(PROTOCOL_VERSION, hello.version)
    return hello


def vesicle_context(
    fds: Sequence[int] | None, count: int, mismatched: frozenset[str],
    budget: MappedBudget | None = None,
) -> tuple[DecodeContext, dict[int, int]]:
    """A decoding context that maps a frame's ``count`` claimed descriptors ``fds``.

    ``fds`` is None when fewer than ``count`` arrived (a
    :class:`~cellmesh.errors.VesicleError`). Returns the context and the
    descriptors not yet mapped; the caller closes what is left once the
    frame is decoded. A vesicle that does not fit ``budget``, or that the
    kernel cannot map (``ENOMEM``), fails its one message with a field error.
    """
    if fds is None or len(fds) < count:
        raise VesicleError(f"frame references {count} vesicles but fewer descriptors arrived")
    remaining = dict(enumerate(fds))

    def resolve(ref: VesicleRef) -> memoryview:
        fd = remaining.pop(ref.index, None)
        if fd is None:
            raise VesicleError(f"vesicle {ref.index} is referenced twice")
        try:
            return map_vesicle(fd, ref.length, budget)
        except VesicleError:
            raise  # not a sealed memfd of that size: the connection's fault
        except OverBudget as exc:
            raise Bad(str(exc)) from None
        except (OSError, ValueError) as exc:  # ENOMEM, or a length mmap refuses
            raise Bad(f"a vesicle of {ref.length} bytes cannot be mapped: "
                      f"{getattr(exc, 'strerror', None) or exc}") from None

    return DecodeContext(resolve, mismatched), remaining


class ClientReceiver:
    """How a client applies what a cell sends: replies, errors, credit, goaway.

    A mixin over the connection's state, shared by both drivers: it reads
    and updates ``registry``, ``pending`` (call id -> (batch, index), or
    ``(None, -1)`` for a call given up), ``calls_left``, ``bytes_left``,
    ``peer_name``, ``peer_fps`` and ``draining``, and calls the hooks
    :meth:`on_credit` and :meth:`on_goaway`.
    """

    registry: ProteinRegistry
    pending: dict[int, tuple[ReplyBatch | None, int]]
    calls_left: int
    bytes_left: int
    peer_name: str
    peer_fps: dict[str, str]
    #: The cell sent goaway: no new calls on this connection.
    draining: bool

    def on_credit(self) -> None:
        """A credit item arrived (wake the callers that wait for credit)."""

    def on_goaway(self) -> None:
        """A goaway arrived (new calls must go to a new connection)."""

    def receive(self, items: list[list[Any]], ctx: DecodeContext) -> None:
        """Apply the items of one frame the cell sent (see the module doc)."""
        for item in items:
            kind = item[0]
            if kind == Kind.REPLY:
                self._reply(item[1], item[2], ctx)
            elif kind == Kind.COLUMNS:
                self._column_replies(item, ctx)
            elif kind == Kind.CREDIT:
                self.calls_left += item[1]
                self.bytes_left += item[2]
                self.on_credit()
            elif kind == Kind.ERROR:
                self._error(Error(id=item[1], code=item[2], type_name=item[3],
                                  message=item[4], traceback=item[5]))
            elif kind == Kind.GOAWAY:
                self.draining = True
                self.on_goaway()
            elif kind == Kind.HELLO:
                raise HandshakeError("the cell sent a second hello")
            else:
                raise RemoteProtocolError(
                    f"a cell may not send frames of kind {Kind(kind).name} to a client"
                )

    def _take(self, call_id: int) -> tuple[ReplyBatch | None, int]:
        try:
            return self.pending.pop(call_id)
        except KeyError:
            raise RemoteProtocolError(f"reply for unknown call id {call_id}") from None

    def _reply(self, call_id: int, body: list[Any] | None, ctx: DecodeContext) -> None:
        try:
            replies, index = self.pending.pop(call_id)
        except KeyError:
            raise RemoteProtocolError(f"reply for unknown call id {call_id}") from None
        if replies is None:
            return  # the caller cancelled; this is the final answer, discard it
        value: Any = None
        error: BaseException | None = None
        if body is not None:
            try:
                value = self.registry.decode(body, ctx, self.peer_fps)
            except ProteinError as exc:
                error = exc
            except Exception:
                # Connection-level (a bad vesicle): the call is still owed an
                # answer, the connection's failure (fail_pending).
                self.pending[call_id] = (replies, index)
                raise
        replies._answer(index, value, error)

    def _column_replies(self, item: list[Any], ctx: DecodeContext) -> None:
        _, sub, count, name, ids, columns = item
        if sub != Kind.REPLY:
            raise RemoteProtocolError("a cell may only send replies in columns frames")
        error: ProteinError | None = None
        try:
            values: list[Any] = self.registry.decode_columns(
                name, columns, count, ctx, self.peer_fps
            )
        except ProteinError as exc:
            values, error = [None] * count, exc
        pop = self.pending.pop
        for call_id, value in zip(ids, values, strict=True):
            try:
                replies, index = pop(call_id)
            except KeyError:
                raise RemoteProtocolError(f"reply for unknown call id {call_id}") from None
            if replies is not None:
                replies._answer(index, value, error)

    def _error(self, error: Error) -> None:
        if error.id is None:
            raise CellEndedConnection(
                f"the cell reported a protocol error (code {error.code}): {error.message}"
            )
        replies, index = self._take(error.id)
        if replies is not None:
            replies._answer(index, None, remote_error(
                cell=self.peer_name, code=error.code, type_name=error.type_name,
                message=error.message, remote_traceback=error.traceback,
            ))

    def fail_call(self, call_id: int, exc: BaseException) -> None:
        """One call could not be sent (its item was refused): it fails with ``exc``."""
        replies, index = self.pending.pop(call_id, (None, 0))
        if replies is not None:
            replies._answer(index, None, exc)

    def fail_pending(self, exc: BaseException) -> None:
        """Complete every pending batch with ``exc`` (the connection is gone)."""
        pending, self.pending = self.pending, {}
        for replies, index in pending.values():
            if replies is not None and not replies.done:
                replies._fail(index, exc)

    def fail_refused(self, cell: str, exc: RemoteProtocolError) -> None:
        """This client refused what ``cell`` sent (``exc``) and closes the connection:
        every call in flight fails with :class:`~cellmesh.errors.ReplyRefused`.

        For a cell that deduplicates retries (its hello announced sessions),
        where resending would only bring the same answer back. The refused
        frame is not decoded, so which answers it held is unknown: every call
        still waiting for its answer here is a candidate and gets the error
        (calls given up by their callers are not counted).
        """
        in_flight = sum(
            1 for replies, _ in self.pending.values() if replies is not None and not replies.done
        )
        if in_flight:
            self.fail_pending(ReplyRefused(cell, str(exc), code=exc.code, in_flight=in_flight))

    @staticmethod
    def protocol_error_frame(exc: RemoteProtocolError) -> bytes:
        """The connection-level error frame that tells the cell what it did wrong."""
        error = Error(id=None, code=exc.code, type_name=type(exc).__name__, message=str(exc))
        return codec.frame_bytes(error.to_wire())


class ClientCore(ClientReceiver):
    """The protocol state of one client connection, both halves (see the module doc)."""

    def __init__(
        self, registry: ProteinRegistry, *, client_name: str, max_frame_size: int
    ) -> None:
        self.registry = registry
        self.client_name = client_name
        self.max_frame_size = max_frame_size
        self.pending = {}
        self.next_id = 1
        self.calls_left = 0
        self.bytes_left = 0
        self.peer_name = "?"
        self.peer_fps = {}
        self.peer_max_frame = codec.DEFAULT_MAX_FRAME_SIZE
        #: The server deduplicates session calls (a replicated cell): a plain call
        #: that was sent may have been applied even if its connection broke.
        self.peer_sessions = False
        self.ctx = DecodeContext()
        self.draining = False

    # -- hello -------------------------------------------------------------

    def hello_bytes(self) -> bytes:
        """Our hello frame (LocalProtocolError past MAX_HELLO_SIZE, see :func:`hello_frame`)."""
        hello = Hello(
            version=PROTOCOL_VERSION, name=self.client_name,
            proteins=self.registry.fingerprints(), max_frame_size=self.max_frame_size,
        )
        return hello_frame(hello)

    def accept_hello(self, items: list[list[Any]], peer: str) -> None:
        """Take the cell's hello (see :func:`parse_hello`)."""
        frame = parse_hello(items, peer)
        self.peer_name = frame.name
        self.peer_fps = frame.proteins
        self.peer_max_frame = frame.max_frame_size
        self.calls_left = frame.credit_calls
        self.bytes_left = frame.credit_bytes
        self.ctx = DecodeContext(None, self.registry.mismatched(frame.proteins))
        self.peer_sessions = frame.sessions

    # -- sending -----------------------------------------------------------

    @property
    def has_credit(self) -> bool:
        """A call or signal may be sent now."""
        return self.calls_left > 0 and self.bytes_left > 0

    def _fit(
        self, batch: OutboundBatch, kind: int, start: int, n: int
    ) -> tuple[int, bytes, list[int] | None]:
        """The most of messages ``[start, start + n)`` that fit one frame (halving)."""
        if n < 1:
            raise ValueError("no call credit to frame with (wait for credit first)")
        if batch.per_message:
            n = 1
        while True:
            ids = None if kind == Kind.SIGNAL else list(range(self.next_id, self.next_id + n))
            frames = codec.encode_items(batch.items(kind, start, start + n, ids),
                                        self.peer_max_frame)
            if len(frames) == 1:
                return n, frames[0], ids
            n //= 2

    def frame_calls(
        self, batch: OutboundBatch, start: int, want: int, replies: ReplyBatch, offset: int
    ) -> tuple[int, bytes, list[int]]:
        """One frame of calls for messages from ``start`` (at most ``want``, within credit).

        The calls are registered as answers ``offset...`` of ``replies`` and
        their credit is taken. Returns (count, frame bytes, call ids).
        Raises :class:`~cellmesh.errors.LocalProtocolError` when one message
        alone exceeds the peer's frame limit.
        """
        n, data, ids = self._fit(batch, Kind.CALL, start, min(want, self.calls_left))
        assert ids is not None
        self.next_id += n
        for j, call_id in enumerate(ids):
            self.pending[call_id] = (replies, offset + j)
        self.calls_left -= n
        self.bytes_left -= len(data) - codec.HEADER_SIZE  # the peer counts payload bytes
        return n, data, ids

    def frame_signals(self, batch: OutboundBatch, start: int, want: int) -> tuple[int, bytes]:
        """One frame of signals for messages from ``start``; their credit is taken."""
        n, data, _ = self._fit(batch, Kind.SIGNAL, start, min(want, self.calls_left))
        self.calls_left -= n
        self.bytes_left -= len(data) - codec.HEADER_SIZE
        return n, data

    def forget(self, ids: Iterable[int]) -> None:
        """Calls whose frame was never sent: drop them (their credit is moot: the
        connection is being abandoned)."""
        for call_id in ids:
            self.pending.pop(call_id, None)

    def cancel(self, ids: Iterable[int]) -> list[bytes]:
        """The caller gave up these calls: discard their answers; the cancel frames."""
        items = []
        for call_id in ids:
            if call_id in self.pending:
                self.pending[call_id] = _CANCELLED
                items.append([Kind.CANCEL, call_id])
        if not items:
            return []
        try:
            return codec.encode_items(items, self.peer_max_frame)
        except CellmeshError:
            return []

    def apply(self, items: list[list[Any]], ctx: DecodeContext | None = None) -> None:
        """:meth:`receive` with the connection's context when the frame had no vesicles."""
        self.receive(items, ctx if ctx is not None else self.ctx)

    def fail(self, exc: BaseException) -> None:
        """Complete every pending batch with ``exc`` and wake credit waiters."""
        self.fail_pending(exc)
        self.on_credit()


__all__ = [
    "CellEndedConnection",
    "ClientCore",
    "ClientReceiver",
    "ReplyBatch",
    "NO_HELLO",
    "NO_SOCKET",
    "connect_failure",
    "parse_hello",
    "vesicle_context",
]

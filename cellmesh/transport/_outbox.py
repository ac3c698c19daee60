"""A synapse connection's outbound side: messages queued in a pass, framed and credited at its end.

Theory of operation
-------------------
``fire``, ``signal`` and ``signal_nowait`` of one message do the per-message
work only: validate and encode the body (:meth:`~cellmesh.wire.proteins.Schema.encode`),
check that it can fit one frame, reserve one call of credit, and append
``(kind, id, schema, body)`` to :attr:`Outbox.entries`. No frame is built and
nothing is written per message. At the end of the scheduler pass the
channel calls :meth:`Outbox.prepare`, which turns every entry queued during
the pass into wire items (:func:`~cellmesh.wire.batching.coalesce`: a run of
one protein becomes one columns item), cuts them into as few frames as the
peer's frame limit allows, charges byte credit frame by frame, and queues
the frames on the channel, which writes them with one ``sendmsg``. Sixteen
tasks that each fire in one pass therefore cost one frame, one write and
one wake-up of the cell. The one exception is a call that is the only one
pending, made by a caller that takes the read role: :meth:`Outbox.write_now`
frames and writes it at once (see ``Connection.read_for``).

Ordering: entries, held frames and frames sent directly (``fire_many``,
vesicles) leave in the order they were queued: before a caller sends a
frame of its own it calls :meth:`Outbox.encode_pending`, and no direct frame
is sent while frames wait for byte credit.

Credit (docs/protocol.md section 7): one call is reserved per entry when it
is queued, and the byte rule is applied per frame when the frames are cut: a
frame leaves only while ``bytes_left > 0``; frames that find no byte credit
wait in :attr:`Outbox.held` (in order) until a credit frame arrives. So the
server's counters and ours agree frame by frame, exactly as before.

Signals in a loop: ``signal`` sets :attr:`Outbox.defer` before its
checkpoint. A pass that ends with only signals queued (no call, no cancel)
while their sender is about to run again keeps them for the next pass, at
most :data:`MAX_DEFER_PASSES` passes and :data:`MAX_DEFER_ENTRIES` entries,
so a producer that signals in a loop writes once per many signals; the
first pass in which no signal was sent flushes them.

Bounds: entries hold at most the reserved call credit and never more than
:data:`MAX_ENTRIES` (whatever credit a peer grants); held frames at most the
same calls; unsent bytes are capped by the channel
(:data:`~cellmesh.transport._channel.MAX_QUEUED_BYTES`). Past a cap,
``fire``/``signal`` frame what is queued and wait, and ``signal_nowait``
raises ``trio.WouldBlock``.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from typing import Any, Final

from ..errors import ErrorCode, LocalProtocolError
from ..wire import codec
from ..wire.batching import Entry, coalesce
from ..wire.codec import Kind
from ..wire.proteins import EncodeContext, Schema
from ._channel import Channel

#: Signals queued by a looping sender wait at most this many passes ...
MAX_DEFER_PASSES: Final = 256
#: ... and are written once this many entries are queued.
MAX_DEFER_ENTRIES: Final = 256
#: At most this many messages wait for the end of a pass, whatever credit the
#: peer granted (a task that queues without yielding then waits, or gets
#: ``trio.WouldBlock`` from ``signal_nowait``).
MAX_ENTRIES: Final = 16384


class Outbox:
    """Entries queued this pass and frames waiting for byte credit, of one connection.

    The owning connection sets the channel's ``prepare`` hook to
    :meth:`prepare` and keeps the credit counters here up to date with
    the server's credit frames.
    """

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.calls_left = 0
        self.bytes_left = 0
        self.peer_max_frame = codec.DEFAULT_MAX_FRAME_SIZE
        self.packed_columns = False  # the peer reads the packed bytes/str columns
        self.entries: list[Entry] = []
        self.held: collections.deque[tuple[bytes, int]] = collections.deque()
        self.defer = False  # a signal() in this pass will run again: keep signals one more pass
        self.urgent = False  # a call or cancel is queued: write at the end of this pass
        self.deferred = 0
        channel.prepare = self.prepare

    # -- queueing ------------------------------------------------------------

    def ready(self) -> bool:
        """True if one more message may be queued now (credit, nothing held, below the caps)."""
        return (
            self.calls_left > 0
            and self.bytes_left > 0
            and not self.held
            and len(self.entries) < MAX_ENTRIES
            and not self.channel.over_cap
        )

    def check_fits(self, schema: Schema, body: codec.Body) -> None:
        """Raise LocalProtocolError (code 2) if ``body`` cannot fit one frame of the peer.

        Only a message that cannot fit even alone, as ``[1, id, body]`` with
        the largest id, is refused (:func:`~cellmesh.wire.codec.body_fits`);
        one that passes always leaves, at worst in a frame of its own
        (:func:`~cellmesh.wire.codec.encode_chunks` splits batches and
        columns items down to plain items). The error names the real sizes.
        """
        fast = schema.fits_any_frame
        if fast is not None and fast(body):
            return
        limit = self.peer_max_frame
        if not codec.body_fits(body, limit, schema.field_names):
            what = f"a {schema.cls.__qualname__} message ({schema.name})"
            raise LocalProtocolError(
                codec.too_large_text(what, codec.lone_size(body), limit, body),
                code=ErrorCode.FRAME_TOO_LARGE,
            )

    def queue(self, kind: int, call_id: int, schema: Schema, body: codec.Body) -> None:
        """Queue one call (``call_id``) or signal (``call_id`` 0); reserve its call credit."""
        self.entries.append((kind, call_id, schema, body))
        self.calls_left -= 1
        if kind == Kind.CALL:
            self.urgent = True
        self.channel.mark()

    def queue_signal(self, schema: Schema, body: codec.Body) -> None:
        """Queue one signal from a sender that runs again next pass (``signal``):
        it may wait for that pass's signals (see the module doc)."""
        self.entries.append((Kind.SIGNAL, 0, schema, body))
        self.calls_left -= 1
        self.defer = True
        self.channel.mark()

    def queue_cancels(self, ids: Sequence[int]) -> None:
        """Queue cancel frames (after whatever was queued before them)."""
        for call_id in ids:
            self.entries.append((Kind.CANCEL, call_id, None, None))
        self.urgent = True
        self.channel.mark()

    # -- end of pass -----------------------------------------------------------

    def prepare(self) -> bool:
        """The channel's end-of-pass hook: frame the entries (or keep signals a pass)."""
        if not self.entries:
            return False
        if (
            self.defer
            and not self.urgent
            and self.deferred < MAX_DEFER_PASSES
            and len(self.entries) < MAX_DEFER_ENTRIES
        ):
            self.defer = False
            self.deferred += 1
            return True
        self.encode_pending()
        return False

    def write_now(self) -> None:
        """Frame what is queued and hand it to the kernel now, not at the end of the pass."""
        self.encode_pending()
        self.channel.write_pending()

    def encode_pending(self) -> None:
        """Frame every queued entry now and send what byte credit allows (in order)."""
        self.defer = self.urgent = False
        self.deferred = 0
        if not self.entries:
            return
        entries, self.entries = self.entries, []
        if len(entries) == 1 and not self.held:  # a lone call: no grouping to do
            kind, call_id, _, body = entries[0]
            if kind == Kind.CALL:
                data = codec.frame_bytes([Kind.CALL, call_id, body])
                if len(data) - codec.HEADER_SIZE <= self.peer_max_frame and self.bytes_left > 0:
                    self.channel.send(data)
                    self.bytes_left -= len(data) - codec.HEADER_SIZE
                    return
        items = coalesce(entries, self.packed_columns)
        try:
            chunks = codec.encode_chunks(items, self.peer_max_frame)
        except (LocalProtocolError, ValueError, TypeError, OverflowError):
            chunks = self._encode_each(items)  # find the item at fault; fail only it
        self.held.extend((data, weight) for data, weight in chunks)
        self.send_held()

    def _encode_each(self, items: list[list[Any]]) -> list[tuple[bytes, int]]:
        """Frames for items one by one; an item that cannot be framed is refused.

        Single messages were checked when they were queued (fields, size,
        text), so this is a safety net: the calls of a refused item fail with
        the error, and its signals are not sent.
        """
        chunks: list[tuple[bytes, int]] = []
        for item in items:
            try:
                chunks += codec.encode_chunks([item], self.peer_max_frame)
            except (LocalProtocolError, ValueError, TypeError, OverflowError) as exc:
                self.refused(item, exc)
        return chunks

    def refused(self, item: list[Any], exc: Exception) -> None:
        """An item could not be framed (the connection overrides: fails its calls)."""
        self.calls_left += codec.item_weight(item)

    def send_held(self) -> None:
        """Send held frames while byte credit allows (call after credit arrives)."""
        held = self.held
        while held:
            data, weight = held[0]
            if weight and self.bytes_left <= 0:
                return
            held.popleft()
            self.channel.send(data)
            if weight:
                self.bytes_left -= len(data) - codec.HEADER_SIZE

    # -- frames built by the caller (batches, vesicles) ----------------------------

    def send_frame(self, data: bytes, ctx: EncodeContext) -> None:
        """Send one frame carrying calls/signals (with the vesicles in ``ctx``).

        The caller has called :meth:`encode_pending` and checked :meth:`ready`
        (so nothing is held and byte credit is positive), and reserves the
        frame's calls itself.
        """
        fds: Sequence[int] = ()
        done: Callable[[], None] | None = None
        if ctx.vesicles:
            fds = [v.fileno() for v in ctx.vesicles]
            owned = list(ctx.owned)

            def sent() -> None:
                for vesicle in owned:
                    vesicle.close()

            done = sent
        self.channel.send(data, fds, done)
        self.bytes_left -= len(data) - codec.HEADER_SIZE  # the peer counts payload bytes

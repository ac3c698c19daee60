"""A membrane connection's outbound side: answers queued in a pass, framed at its end.

Theory of operation
-------------------
A call's final answer -- its reply, or an error frame with its id -- is
queued here (:attr:`Answers.replies`, :attr:`Answers.out`) when the handler
finishes, inline in the reader or in the task that owns the call. At the end
of the scheduler pass (the channel's ``prepare`` hook) :meth:`Answers._flush`
encodes everything queued -- a run of replies of one protein as one columns
item, a reply carrying vesicles in a frame of its own -- and hands the frames
to the channel, which writes them with one ``sendmsg``.

Credit (docs/protocol.md section 7): a finished call releases one call of
credit, and its frame's bytes once every call of the frame is done. What was
released since the last flush becomes *returnable* only once the frames of
that flush have been written to the socket (:meth:`Channel.after_sent`), and
returnable credit goes back lazily, in a credit item, once the client's
remaining credit (as we count it) is at most half the grant. So a client that
stops reading its replies stops getting credit: what it can make a
connection hold is bounded by the window it was granted.

Call ids (section 4.2): once a connection tracks its in-flight ids
(:attr:`Answers.live`, see the reader), an answered id stays in flight until
its answer has been written.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any, Protocol

import trio

from ..errors import ErrorCode, FieldError, LocalProtocolError, ProteinError
from ..wire import codec
from ..wire._cliptext import MAX_ERROR_TEXT, MAX_TRACEBACK_TEXT, clip_text
from ..wire.codec import Error, Kind
from ..wire.proteins import EncodeContext, ProteinRegistry
from ..wire.vesicle import MappedBudget, Vesicle
from ._channel import Channel, ChannelBroken
from ._dispatch import Handler
from ._fds import FdBudget
from ._options import MembraneOptions, MembraneStats


class ConnectionHost(Protocol):
    """What a connection needs from the membrane that accepted it.

    :class:`~cellmesh.transport.membrane.Membrane` satisfies it; naming the
    needs here keeps this module below the membrane (no import cycle).
    """

    name: str
    handler: Handler
    registry: ProteinRegistry
    options: MembraneOptions
    stats: MembraneStats
    fd_budget: FdBudget
    mapped: MappedBudget
    on_handler_error: Callable[[BaseException], None] | None

    def log(self, text: str) -> None:
        """Report a connection event."""


def exception_type_name(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


class FrameCost:
    """Byte credit held by one received frame until all its calls finish."""

    __slots__ = ("remaining", "size")

    def __init__(self, remaining: int, size: int) -> None:
        self.remaining = remaining
        self.size = size


class Answers:
    """Answers and credit of one membrane connection (see the module doc).

    The connection (:class:`~cellmesh.transport._server_conn.ServerConnection`)
    sets ``peer_max_frame`` and ``peer_packed`` from the client's hello,
    ``live`` when it starts tracking call ids, and counts received calls
    against ``calls_left``/``bytes_left``.
    """

    def __init__(self, membrane: ConnectionHost, channel: Channel) -> None:
        self.m = membrane
        self.channel = channel
        opts = membrane.options
        self.peer_max_frame = codec.DEFAULT_MAX_FRAME_SIZE
        self.peer_packed = False  # the client reads packed str/bytes columns
        self.calls_left = opts.credit_calls
        self.bytes_left = opts.credit_bytes
        # Credit of calls answered (and signals finished) since the last flush;
        # then, once flushed, of answers that may not be written yet: returnable
        # once they are (see _flush).
        self.released_calls = 0
        self.released_bytes = 0
        self.unwritten_calls = 0
        self.unwritten_bytes = 0
        self.return_calls = 0  # returnable: goes out with the next credit frame
        self.return_bytes = 0
        self.live: set[int] | None = None  # in-flight call ids, once tracked
        self.out: list[list[Any]] = []
        self.replies: list[tuple[int, Any]] = []
        # Estimated bytes of the answers in ``out``/``replies`` (not yet on the
        # channel): once it reaches ``weight_limit`` they are encoded, so the
        # channel's cap sees them (see answers_over_cap).
        self.pending_weight = 0
        self.weight_limit = max(opts.max_queued_bytes // 4, 1)
        self.enc_ctx = EncodeContext(opts.vesicle_threshold, Vesicle.from_bytes)
        self.done = trio.Event()

    def _complete(self, call_id: int, cost: FrameCost, result: Any) -> None:
        self._release(cost)
        if not call_id:
            return
        if result is None:
            self.out.append([Kind.REPLY, call_id, None])
            return
        self.replies.append((call_id, result))
        self.pending_weight += self.weigh(result)

    def weigh(self, result: Any) -> int:
        """The estimated encoded size of a reply; one whose size has no cheap
        estimate (lists, maps, nested proteins) counts an eighth of the limit,
        so at most eight such replies wait unencoded."""
        try:
            weigher = self.m.registry.schema_for(result).weigh  # (cached by type there)
            if weigher is not None:
                return weigher(result)
        except Exception:  # not a protein, or a field of the wrong type: BAD_REPLY later
            pass
        return self.weight_limit // 8 + 1

    def answers_over_cap(self) -> bool:
        """True while more answers wait to be written than the cap allows: those
        queued on the channel, and those made but not yet encoded (encoded now
        once their estimated size matters, so the channel counts them)."""
        if self.pending_weight >= self.weight_limit:
            self._flush()
        return self.channel.over_cap

    def _encode_replies(self) -> None:
        """Turn pending replies into wire items: runs of one protein type become
        one columnar item, the rest single replies (vesicles in frames of their own)."""
        replies, self.replies = self.replies, []
        if len(replies) == 1:  # one call answered this pass: nothing to group
            self._encode_reply(*replies[0])
            return
        registry = self.m.registry
        out = self.out
        i, n = 0, len(replies)
        while i < n:
            cls = type(replies[i][1])
            j = i + 1
            while j < n and type(replies[j][1]) is cls:
                j += 1
            if j - i >= 2:
                run = replies[i:j]
                objs = [result for _, result in run]
                ctx = self.enc_ctx
                try:
                    schema = registry.schema_for(objs[0])
                    values = schema.column_values(objs, ctx)
                except (TypeError, ProteinError):
                    values = None
                if ctx.vesicles:
                    self._release_ctx(ctx)
                    values = None
                if values is not None:
                    out.append(codec.columns_item(
                        Kind.REPLY, schema.name, [call_id for call_id, _ in run],
                        schema.pack_columns(values, self.peer_packed), j - i,
                    ))
                    i = j
                    continue
            for call_id, result in replies[i:j]:
                self._encode_reply(call_id, result)
            i = j

    def _encode_reply(self, call_id: int, result: Any) -> None:
        ctx = self.enc_ctx
        try:
            body = self.m.registry.encode(result, ctx)
        except (TypeError, ProteinError) as exc:
            self._release_ctx(ctx)
            self.m.stats.errors += 1
            self.out.append(Error(
                id=call_id, code=ErrorCode.BAD_REPLY, type_name=exception_type_name(exc),
                message=f"the handler returned an invalid reply: {exc}",
            ).to_wire())
            return
        if ctx.vesicles:
            self._send_with_vesicles([Kind.REPLY, call_id, body], ctx)
        else:
            self.out.append([Kind.REPLY, call_id, body])

    def _send_with_vesicles(self, item: list[Any], ctx: EncodeContext) -> None:
        self._flush_out()  # what was queued before it leaves before it
        fds = [v.fileno() for v in ctx.vesicles]
        owned = list(ctx.owned)
        ctx.vesicles.clear()
        ctx.owned.clear()

        def sent() -> None:
            for vesicle in owned:
                vesicle.close()

        try:
            data = codec.encode_items([item], self.peer_max_frame)[0]
        except (LocalProtocolError, FieldError) as exc:
            sent()
            # Even with its bytes in vesicles the reply is too large, or its text
            # cannot be encoded: that call fails (every call gets one final answer).
            self.out.extend(self._encode_each_errors(item, exc))
            return
        try:
            self.channel.send(data, fds, sent)
        except ChannelBroken:
            sent()
            self.done.set()
        if self.live is not None:
            self._free_ids_when_sent([item])

    def _release_ctx(self, ctx: EncodeContext) -> None:
        for vesicle in ctx.owned:
            vesicle.close()
        ctx.vesicles.clear()
        ctx.owned.clear()

    def _fail_call(self, call_id: int, cost: FrameCost, code: int, exc: BaseException) -> None:
        self.m.stats.errors += 1
        if code == ErrorCode.HANDLER_FAILED and self.m.on_handler_error is not None:
            self.m.on_handler_error(exc)  # may not return (a cell dying of MemoryError)
        if not call_id:
            self._release(cost)
            text = clip_text(str(exc), MAX_ERROR_TEXT)
            self.m.log(f"signal failed: {exception_type_name(exc)}: {text}")
            return
        tb = None
        if code == ErrorCode.HANDLER_FAILED and self.m.options.send_tracebacks:
            tb = "".join(traceback.format_exception(exc))
        self._finish_error(call_id, code, exception_type_name(exc), str(exc), tb, cost=cost)

    def _finish_error(
        self,
        call_id: int,
        code: int,
        type_name: str,
        message: str,
        tb: str | None = None,
        *,
        cost: FrameCost | None = None,
    ) -> None:
        if cost is not None:
            self._release(cost)
        message = clip_text(message, MAX_ERROR_TEXT)
        if tb is not None:
            tb = clip_text(tb, MAX_TRACEBACK_TEXT)
        self.out.append([Kind.ERROR, call_id, code, clip_text(type_name, 1024), message, tb])
        self.pending_weight += 64 + len(type_name) + len(message) + (len(tb) if tb else 0)
        self.channel.mark()

    def _release(self, cost: FrameCost) -> None:
        self.released_calls += 1
        cost.remaining -= 1
        if cost.remaining == 0:
            self.released_bytes += cost.size

    def _flush(self) -> None:
        """Queue replies/errors and returned credit on the channel as one frame (or a few).

        Called by the channel at the end of every pass in which something was
        queued (``channel.mark()``), and directly where order or shutdown needs
        it now; the channel writes the frames with one ``sendmsg``.

        The credit of the calls answered since the last flush comes back only
        once these frames have been written (docs/protocol.md section 7): a
        client that stops reading its replies stops getting credit, so what it
        can make this connection hold is bounded by the window it was granted.
        """
        if not self.channel.queued:
            if self.unwritten_calls:
                # Everything flushed before has been written: its credit may go back.
                self.return_calls += self.unwritten_calls
                self.return_bytes += self.unwritten_bytes
                self.unwritten_calls = self.unwritten_bytes = 0
            if self.released_calls and not self.out and not self.replies:
                # Completed with no answer to write (signals): returnable now.
                self.return_calls += self.released_calls
                self.return_bytes += self.released_bytes
                self.released_calls = self.released_bytes = 0
        calls = self.released_calls
        self._flush_out()
        if calls:  # (bytes are only ever released with a call)
            self.unwritten_calls += calls
            self.unwritten_bytes += self.released_bytes
            self.released_calls = self.released_bytes = 0
            opts = self.m.options
            if (self.calls_left <= opts.credit_calls // 2
                    or self.bytes_left <= opts.credit_bytes // 2):
                # The client may be waiting for this credit: return it the moment
                # these frames are written, not at some later flush.
                calls, nbytes = self.unwritten_calls, self.unwritten_bytes
                self.unwritten_calls = self.unwritten_bytes = 0
                self.channel.after_sent(lambda: self._returnable(calls, nbytes))

    def _returnable(self, calls: int, nbytes: int) -> None:
        """Answers were written: their credit may go back (lazily, see _flush_out).

        Called as the frames are written; when the credit is due, its frame is
        queued right behind them (the channel writes it in the same ``sendmsg``
        loop, or at the end of the pass), never after a connection-level error.
        """
        self.return_calls += calls
        self.return_bytes += nbytes
        opts = self.m.options
        if self.done.is_set() or not (
            self.calls_left <= opts.credit_calls // 2 or self.bytes_left <= opts.credit_bytes // 2
        ):
            return
        item = [Kind.CREDIT, self.return_calls, self.return_bytes]
        self.calls_left += self.return_calls
        self.bytes_left += self.return_bytes
        self.return_calls = self.return_bytes = 0
        try:
            self.channel.send(codec.frame_bytes(item))
        except ChannelBroken:
            self.done.set()

    def _flush_out(self) -> None:
        """Encode pending answers and due credit and queue them on the channel."""
        self.pending_weight = 0
        if self.replies:
            self._encode_replies()
        out = self.out
        # Return credit lazily: only once the peer's remaining credit (as we
        # know it) is at most half the window. No deadlock: a peer blocked on
        # credit has none left, so whatever its answered calls freed goes out
        # with the flush that follows their writing (_returnable marks it).
        opts = self.m.options
        if (self.return_calls or self.return_bytes) and (
            self.calls_left <= opts.credit_calls // 2 or self.bytes_left <= opts.credit_bytes // 2
        ):
            out.append([Kind.CREDIT, self.return_calls, self.return_bytes])
            self.calls_left += self.return_calls
            self.bytes_left += self.return_bytes
            self.return_calls = self.return_bytes = 0
        if not out:
            return
        self.out = []
        try:
            try:
                frames = codec.encode_items(out, self.peer_max_frame)
            except (LocalProtocolError, FieldError):
                frames = self._encode_each(out)
            for data in frames:
                self.channel.send(data)
        except ChannelBroken:
            self.done.set()
        if self.live is not None:
            self._free_ids_when_sent(out)

    def _free_ids_when_sent(self, items: list[list[Any]]) -> None:
        """Once these answers are written, their call ids are no longer in flight."""
        live = self.live
        ids = [call_id for item in items for call_id in codec.item_call_ids(item)]
        if live is not None and ids:
            self.channel.after_sent(lambda: live.difference_update(ids))

    def _encode_each(self, out: list[list[Any]]) -> list[bytes]:
        """Encode items one by one, turning a reply too large for one frame, or
        with text UTF-8 cannot carry, into an error for the calls it answers."""
        frames = []
        for item in out:
            try:
                frames += codec.encode_items([item], self.peer_max_frame)
            except (LocalProtocolError, FieldError) as exc:
                frames += codec.encode_items(
                    self._encode_each_errors(item, exc), self.peer_max_frame
                )
        return frames

    def _encode_each_errors(
        self, item: list[Any], exc: LocalProtocolError | ProteinError
    ) -> list[list[Any]]:
        """BAD_REPLY error items for every call a reply item that cannot be sent answers."""
        if isinstance(exc, LocalProtocolError):
            type_name, message = "ReplyTooLarge", str(exc)  # (it says what may help)
        else:
            type_name = exception_type_name(exc)
            message = f"the handler returned an invalid reply: {exc}"
        errors = []
        for call_id in codec.item_call_ids(item):
            self.m.stats.errors += 1
            errors.append(Error(
                id=call_id, code=ErrorCode.BAD_REPLY, type_name=type_name,
                message=clip_text(message, MAX_ERROR_TEXT),
            ).to_wire())
        return errors

"""The sans-I/O client core: hello, credit, call ids, replies, errors -- no sockets.

The invariant fuzzed: whatever frame items a cell sends, the core raises only
its documented errors (RemoteProtocolError, HandshakeError,
CellEndedConnection) and every caller's batch completes at most once.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import cellmesh
from cellmesh.errors import (
    ErrorCode,
    FieldError,
    HandshakeError,
    NoReceptor,
    RemoteCellError,
    RemoteProtocolError,
    VersionMismatch,
)
from cellmesh.transport._client_core import (
    CellEndedConnection,
    ClientCore,
    ReplyBatch,
    parse_hello,
)
from cellmesh.wire import codec
from cellmesh.wire.batching import OutboundBatch
from cellmesh.wire.codec import Hello, Kind
from cellmesh.wire.proteins import ProteinRegistry
from cellmesh.wire.vesicle import Vesicle

REG = ProteinRegistry()


@cellmesh.protein("test.core.Num", registry=REG)
class Num:
    n: int


def core(calls: int = 100, nbytes: int = 1 << 20) -> ClientCore:
    c = ClientCore(REG, client_name="test", max_frame_size=codec.DEFAULT_MAX_FRAME_SIZE)
    hello = Hello(version=codec.PROTOCOL_VERSION, name="cell", proteins=REG.fingerprints(),
                  credit_calls=calls, credit_bytes=nbytes)
    c.accept_hello([hello.to_wire()], "cell 'x'")
    return c


def batch(*ns: int) -> OutboundBatch:
    return OutboundBatch(REG, [Num(n) for n in ns], 1 << 30, Vesicle.from_bytes)


class Recorder:
    def __init__(self) -> None:
        self.done: list[ReplyBatch] = []

    def __call__(self, replies: ReplyBatch) -> None:
        self.done.append(replies)


def reply_item(call_id: int, n: int) -> list[Any]:
    return [Kind.REPLY, call_id, REG.encode(Num(n), _ctx())]


def _ctx() -> Any:
    from cellmesh.wire.proteins import EncodeContext

    return EncodeContext()


def test_framing_without_credit_is_refused() -> None:
    with pytest.raises(ValueError, match="no call credit"):
        core(calls=0).frame_calls(batch(1), 0, 1, ReplyBatch(1), 0)


def test_hello_takes_the_cells_credit_and_limits() -> None:
    c = core(calls=3, nbytes=500)
    assert (c.peer_name, c.calls_left, c.bytes_left) == ("cell", 3, 500)
    assert c.has_credit
    items = codec.FrameDecoder()
    items.feed(c.hello_bytes())
    frame = items.next_frame()
    assert frame is not codec.NEED_DATA and frame.items[0][0] == Kind.HELLO


@pytest.mark.parametrize(
    ("items", "error"),
    [
        ([[Kind.ERROR, None, 4, "HandshakeError", "go away", None]], HandshakeError),
        ([[Kind.CREDIT, 1, 1]], HandshakeError),
        ([Hello(version=99, name="x", proteins={}).to_wire()], VersionMismatch),
    ],
)
def test_a_bad_first_frame_is_a_handshake_error(items: list[Any], error: type) -> None:
    with pytest.raises(error):
        parse_hello(items, "cell 'x'")


def test_calls_take_credit_and_replies_complete_the_batch_once() -> None:
    c = core(calls=2)
    done = Recorder()
    replies = ReplyBatch(3, done)
    n, _, ids = c.frame_calls(batch(1, 2, 3), 0, 3, replies, 0)
    assert (n, ids, c.calls_left) == (2, [1, 2], 0)  # credit allowed two
    assert not c.has_credit
    c.apply([[Kind.CREDIT, 1, 100]])
    n2, _, ids2 = c.frame_calls(batch(1, 2, 3), 2, 1, replies, 2)
    assert (n2, ids2) == (1, [3])
    c.apply([reply_item(2, 20), reply_item(1, 10)])
    assert done.done == []
    c.apply([reply_item(3, 30)])
    assert done.done == [replies] and replies.outcome() == [Num(10), Num(20), Num(30)]


def test_errors_fail_their_call_by_code_and_the_first_one_is_raised() -> None:
    c = core()
    done = Recorder()
    replies = ReplyBatch(2, done)
    c.frame_calls(batch(1, 2), 0, 2, replies, 0)
    c.apply([[Kind.ERROR, 2, ErrorCode.HANDLER_FAILED, "KeyError", "'k'", "tb"]])
    c.apply([[Kind.ERROR, 1, ErrorCode.NO_HANDLER, "X", "no receptor for Num", None]])
    with pytest.raises(NoReceptor):
        replies.outcome()
    assert isinstance(replies.errors[1], RemoteCellError)


def test_a_bad_reply_body_fails_only_its_call() -> None:
    c = core()
    replies = ReplyBatch(2, Recorder())
    c.frame_calls(batch(1, 2), 0, 2, replies, 0)
    c.apply([[Kind.REPLY, 1, ["test.core.Num", "not an int"]], reply_item(2, 2)])
    assert isinstance(replies.errors[0], FieldError) and replies.results[1] == Num(2)


def test_cancelled_calls_discard_their_answers() -> None:
    c = core()
    done = Recorder()
    replies = ReplyBatch(1, done)
    _, _, ids = c.frame_calls(batch(1), 0, 1, replies, 0)
    assert c.cancel(ids) == [codec.frame_bytes([Kind.CANCEL, 1])]
    c.apply([reply_item(1, 5)])  # the final answer still comes: discarded
    assert done.done == [] and c.pending == {}


def test_goaway_drains_and_fail_completes_everything() -> None:
    woken: list[str] = []

    class Waking(ClientCore):
        def on_goaway(self) -> None:
            woken.append("w")

    c = Waking(REG, client_name="t", max_frame_size=codec.DEFAULT_MAX_FRAME_SIZE)
    c.accept_hello([Hello(version=codec.PROTOCOL_VERSION, name="cell", proteins={},
                          credit_calls=5, credit_bytes=9999).to_wire()], "cell 'x'")
    done = Recorder()
    replies = ReplyBatch(1, done)
    c.frame_calls(batch(1), 0, 1, replies, 0)
    c.apply([[Kind.GOAWAY, ErrorCode.SHUTTING_DOWN, "bye"]])
    assert c.draining and woken == ["w"]
    c.fail(RuntimeError("gone"))
    assert done.done == [replies]
    with pytest.raises(RuntimeError, match="gone"):
        replies.outcome()
    c.fail(RuntimeError("again"))  # idempotent: completes nothing twice
    assert done.done == [replies]


@pytest.mark.parametrize(
    ("items", "error"),
    [
        ([reply_item(77, 1)], RemoteProtocolError),  # an id we never used
        ([[Kind.CALL, 1, ["test.core.Num", 1]]], RemoteProtocolError),  # cells do not call
        ([Hello(version=1, name="x", proteins={}).to_wire()], HandshakeError),
        ([[Kind.ERROR, None, 1, "MalformedFrame", "you broke it", None]], CellEndedConnection),
    ],
)
def test_what_a_cell_may_not_send_is_a_typed_error(items: list[Any], error: type) -> None:
    with pytest.raises(error):
        core().apply(items)


_ITEM = st.one_of(
    st.builds(lambda i, n: [Kind.REPLY, i, ["test.core.Num", n]], st.integers(0, 6),
              st.one_of(st.integers(), st.text(max_size=3))),
    st.builds(lambda i: [Kind.REPLY, i, None], st.integers(0, 6)),
    st.builds(lambda i, c: [Kind.ERROR, i, c, "T", "m", None],
              st.one_of(st.none(), st.integers(0, 6)), st.integers(0, 40)),
    st.builds(lambda a, b: [Kind.CREDIT, a, b], st.integers(0, 5), st.integers(0, 999)),
    st.just([Kind.GOAWAY, 32, "bye"]),
    st.builds(lambda ids: [Kind.COLUMNS, Kind.REPLY, len(ids), "test.core.Num", ids,
                           [list(range(len(ids)))]],
              st.lists(st.integers(0, 6), min_size=1, max_size=4)),
    st.builds(lambda i: [Kind.CANCEL, i], st.integers(0, 6)),
)


@given(st.lists(st.lists(_ITEM, min_size=1, max_size=4), max_size=6))
def test_any_frames_from_a_cell_give_only_typed_errors(frames: list[list[Any]]) -> None:
    c = core(calls=4)
    done = Recorder()
    replies = ReplyBatch(4, done)
    c.frame_calls(batch(1, 2, 3, 4), 0, 4, replies, 0)
    for items in frames:
        try:
            c.apply(items)
        except (RemoteProtocolError, HandshakeError, CellEndedConnection):
            c.fail(RuntimeError("closed"))
            break
    assert len(done.done) <= 1
    assert c.calls_left >= 0

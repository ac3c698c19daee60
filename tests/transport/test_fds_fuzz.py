"""Fuzzing the descriptor rule of a channel (docs/protocol.md section 13), over a real socket.

Invariant, for ANY sequence of chunks -- bytes cut from valid frames (some
referencing vesicles) and garbage, each sent with 0 to 64 descriptors:
reading frames from a :class:`Channel` raises only a protocol error or
``ChannelBroken``; the channel never holds more than ``MAX_HELD_FDS``
unclaimed descriptors; the shared budget never goes negative and is back to
zero once the channel is closed; and no descriptor is leaked (``/proc/self/fd``).
"""

from __future__ import annotations

import array
import itertools
import os
import socket
from pathlib import Path
from typing import Any

import cbor2
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellmesh.errors import ProtocolError
from cellmesh.transport._channel import Channel, ChannelBroken
from cellmesh.transport._fds import MAX_HELD_FDS, FdBudget
from cellmesh.wire.codec import NEED_DATA, VESICLE_TAG, Kind, frame_bytes

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc")


def _vesicle_call(count: int) -> bytes:
    refs = [cbor2.CBORTag(VESICLE_TAG, [i, 4096]) for i in range(count)]
    return frame_bytes([Kind.CALL, 1, ["p", *refs]])


_frames = st.one_of(
    st.just(frame_bytes([Kind.CANCEL, 3])),
    st.just(frame_bytes([Kind.CALL, 2, ["p", 1]])),
    st.integers(1, 64).map(_vesicle_call),
    st.binary(min_size=1, max_size=40),
)


@st.composite
def scripts(draw: st.DrawFn) -> list[tuple[bytes, int]]:
    """Chunks of a stream of frames, each with a number of descriptors to send."""
    stream = frame_bytes([Kind.CREDIT, 0, 0]) + b"".join(draw(st.lists(_frames, max_size=6)))
    cuts = sorted(set(draw(st.lists(st.integers(1, max(len(stream) - 1, 1)), max_size=6))))
    bounds = [0, *cuts, len(stream)]
    return [
        (stream[lo:hi], draw(st.sampled_from([0, 0, 1, 3, 64])))
        for lo, hi in itertools.pairwise(bounds) if hi > lo
    ]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) - 1


async def _drive(script: list[tuple[bytes, int]]) -> None:
    sender, receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    budget = FdBudget(256)
    channel = Channel(receiver, fd_budget=budget)
    null = os.open(os.devnull, os.O_RDONLY)
    peak = 0
    try:
        for chunk, nfds in script:
            try:
                if nfds:
                    sender.sendmsg([chunk], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                              array.array("i", [null] * nfds))])
                else:
                    sender.sendall(chunk)
            except OSError:
                break
        sender.shutdown(socket.SHUT_WR)
        with trio.fail_after(10):
            while True:
                try:
                    frame = channel.next_frame()
                    if frame is NEED_DATA:
                        if not await channel.receive():
                            break
                        peak = max(peak, len(channel.fds))
                        continue
                    claimed = channel.take_fds(frame.vesicles)
                    if claimed is None:
                        break  # fewer than referenced: the connection would fail here
                    for fd in claimed:
                        os.close(fd)
                except (ProtocolError, ChannelBroken):
                    break
                assert len(channel.fds) <= MAX_HELD_FDS
                assert budget.held == len(channel.fds) >= 0
    finally:
        os.close(null)
        sender.close()
        channel.close()
    assert peak <= MAX_HELD_FDS + 64  # one chunk may arrive before the check refuses it
    assert budget.held == 0


@settings(max_examples=60, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(script=scripts())
def test_fuzz_descriptors_are_held_only_while_a_frame_may_claim_them(
    script: list[tuple[bytes, int]],
) -> None:
    before = open_fds()
    trio.run(_drive, script)
    assert open_fds() == before


def test_fuzz_descriptors_with_the_first_byte_of_their_frame_are_claimed() -> None:
    """The rule's positive side: a vesicle frame split anywhere after its first byte."""
    frame = _vesicle_call(64)
    for cut in (1, 4, 5, len(frame) - 1):
        before = open_fds()
        script: list[Any] = [(frame_bytes([Kind.CREDIT, 0, 0]) + frame[:cut], 64),
                             (frame[cut:], 0)]
        trio.run(_drive, script)
        assert open_fds() == before

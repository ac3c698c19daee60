"""Vesicles: sealed memfds, read-only mapping on receipt, no leaked descriptors.

Checks cellmesh/wire/vesicle.py against docs/protocol.md section 7. These
tests touch the OS (memfd_create, fcntl seals, mmap, SCM_RIGHTS over a
socketpair) but stay synchronous and sleep-free.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cellmesh import Vesicle
from cellmesh.errors import ErrorCode, LocalProtocolError, VesicleError
from cellmesh.wire.vesicle import map_vesicle

ALL_SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL


def assert_closed(fd: int) -> None:
    with pytest.raises(OSError) as info:
        os.fstat(fd)
    assert info.value.errno == errno.EBADF


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def mapped(name: str) -> bool:
    return f"memfd:{name}" in Path("/proc/self/maps").read_text()


def unique_name() -> str:
    return f"cmtest-{uuid.uuid4().hex[:12]}"


def raw_memfd(size: int, seals: int = 0, *, sealing: bool = True) -> int:
    flags = os.MFD_CLOEXEC | (os.MFD_ALLOW_SEALING if sealing else 0)
    fd = os.memfd_create(unique_name(), flags)
    os.ftruncate(fd, size)
    if seals:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        yield a, b


def pass_fd(pair: tuple[socket.socket, socket.socket], fd: int) -> int:
    """Send ``fd`` across the socketpair with SCM_RIGHTS and return the received copy."""
    a, b = pair
    socket.send_fds(a, [b"\x00"], [fd])
    _, fds, _, _ = socket.recv_fds(b, 1, 1)
    assert len(fds) == 1
    return fds[0]


# ---------------------------------------------------------------------------
# Sender side.


def test_vesicle_alloc_fill_seal() -> None:
    vesicle = Vesicle.alloc(4096)
    assert len(vesicle) == 4096
    assert repr(vesicle) == "<Vesicle 4096 bytes, writable>"
    with vesicle.buffer as buf:
        buf[:5] = b"hello"
        buf[-1:] = b"!"
    vesicle.seal()
    assert vesicle.sealed
    data = vesicle.tobytes()
    assert data[:5] == b"hello" and data[-1:] == b"!" and data[5:-1] == bytes(4090)
    assert fcntl.fcntl(vesicle.fileno(), fcntl.F_GET_SEALS) & ALL_SEALS == ALL_SEALS
    vesicle.seal()  # idempotent
    vesicle.close()


def test_vesicle_sealed_rejects_writes() -> None:
    with Vesicle.alloc(16) as vesicle:
        vesicle.seal()
        with pytest.raises(ValueError):
            vesicle.buffer  # noqa: B018 - the property itself refuses
        fd = vesicle.fileno()
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        for seal in (fcntl.F_SEAL_WRITE, fcntl.F_SEAL_SHRINK, fcntl.F_SEAL_GROW, fcntl.F_SEAL_SEAL):
            assert seals & seal
        with pytest.raises(PermissionError):
            os.pwrite(fd, b"x", 0)
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 8)
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 32)
        with pytest.raises(PermissionError):
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
        assert vesicle.tobytes() == bytes(16)


def test_vesicle_cannot_seal_while_a_view_is_alive() -> None:
    with Vesicle.alloc(16) as vesicle:
        view = vesicle.buffer
        view[0] = 1
        with pytest.raises(LocalProtocolError):
            vesicle.seal()
        assert not vesicle.sealed
        view.release()
        vesicle.seal()
        assert vesicle.tobytes()[0] == 1


@pytest.mark.parametrize("size", [0, -1, True, 1.5, "8"])
def test_vesicle_alloc_rejects_bad_sizes(size: object) -> None:
    with pytest.raises(ValueError):
        Vesicle.alloc(size)  # type: ignore[arg-type]


def test_vesicle_close_is_idempotent_and_final() -> None:
    vesicle = Vesicle.alloc(8)
    fd = vesicle.fileno()
    vesicle.close()
    vesicle.close()
    assert_closed(fd)
    with pytest.raises(ValueError):
        vesicle.fileno()
    with pytest.raises(ValueError):
        vesicle.buffer  # noqa: B018
    assert "closed" in repr(vesicle)


@pytest.mark.parametrize(
    "data", [b"x", b"abc" * 1000, bytearray(b"\x00\xff" * 70_000), memoryview(b"view")]
)
def test_vesicle_from_bytes_round_trip(data: bytes | bytearray | memoryview) -> None:
    with Vesicle.from_bytes(data) as vesicle:
        assert vesicle.sealed
        assert len(vesicle) == len(bytes(data))
        assert vesicle.tobytes() == bytes(data)
        view = map_vesicle(os.dup(vesicle.fileno()), len(vesicle))
        assert view.readonly
        assert view.tobytes() == bytes(data)
        del view


def test_vesicle_from_bytes_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError):
        Vesicle.from_bytes(b"")


# ---------------------------------------------------------------------------
# Receiver side: map_vesicle checks seals and size, and always closes the fd.


def test_vesicle_map_of_a_sealed_memfd_sent_with_scm_rights(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    with Vesicle.from_bytes(b"payload") as vesicle:
        received = pass_fd(pair, vesicle.fileno())
    view = map_vesicle(received, 7)
    assert_closed(received)
    assert bytes(view) == b"payload"
    with pytest.raises(TypeError):
        view[0] = 0


def test_vesicle_map_of_an_unsealed_memfd_is_refused() -> None:
    fd = raw_memfd(64)
    with pytest.raises(VesicleError) as info:
        map_vesicle(fd, 64)
    assert info.value.code == ErrorCode.BAD_VESICLE
    assert_closed(fd)


@pytest.mark.parametrize(
    "seals",
    [
        fcntl.F_SEAL_WRITE,
        fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW,
        fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL,
        fcntl.F_SEAL_SEAL,
    ],
)
def test_vesicle_map_of_a_partly_sealed_memfd_is_refused(seals: int) -> None:
    fd = raw_memfd(64, seals)
    with pytest.raises(VesicleError):
        map_vesicle(fd, 64)
    assert_closed(fd)


def test_vesicle_map_accepts_the_three_required_seals_without_seal_seal() -> None:
    fd = raw_memfd(64, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
    view = map_vesicle(fd, 64)
    assert_closed(fd)
    assert bytes(view) == bytes(64)


def test_vesicle_map_of_a_memfd_without_sealing_is_refused() -> None:
    fd = raw_memfd(64, sealing=False)
    with pytest.raises(VesicleError):
        map_vesicle(fd, 64)
    assert_closed(fd)


@pytest.mark.parametrize("claimed", [1, 63, 65, 4096, 2**40])
def test_vesicle_map_of_a_wrong_size_memfd_is_refused(claimed: int) -> None:
    with Vesicle.from_bytes(b"x" * 64) as vesicle:
        fd = os.dup(vesicle.fileno())
    with pytest.raises(VesicleError):
        map_vesicle(fd, claimed)
    assert_closed(fd)


def test_vesicle_map_of_a_regular_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plain"
    path.write_bytes(b"x" * 64)
    fd = os.open(path, os.O_RDONLY)
    with pytest.raises(VesicleError):
        map_vesicle(fd, 64)
    assert_closed(fd)


def test_vesicle_map_of_a_pipe_is_refused() -> None:
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(VesicleError):
            map_vesicle(read_end, 1)
        assert_closed(read_end)
        with pytest.raises(VesicleError):
            map_vesicle(write_end, 1)
        assert_closed(write_end)
    finally:
        for fd in (read_end, write_end):
            with contextlib.suppress(OSError):
                os.close(fd)


def test_vesicle_map_of_a_socket_is_refused(pair: tuple[socket.socket, socket.socket]) -> None:
    fd = os.dup(pair[0].fileno())
    with pytest.raises(VesicleError):
        map_vesicle(fd, 1)
    assert_closed(fd)


def test_vesicle_mapping_is_released_when_the_view_is_dropped() -> None:
    name = unique_name()
    with Vesicle.alloc(8192, name=name) as vesicle:
        with vesicle.buffer as buf:
            buf[:4] = b"data"
        vesicle.seal()
        fd = os.dup(vesicle.fileno())
    assert not mapped(name)
    view = map_vesicle(fd, 8192)
    assert_closed(fd)
    assert mapped(name)  # the pages live on in the mapping, not the descriptor
    assert bytes(view[:4]) == b"data"
    del view
    gc.collect()
    assert not mapped(name)


def test_vesicle_writable_mapping_is_released_by_seal() -> None:
    name = unique_name()
    with Vesicle.alloc(4096, name=name) as vesicle:
        with vesicle.buffer as buf:
            buf[0] = 1
        assert mapped(name)
        vesicle.seal()
        assert not mapped(name)


def test_vesicle_no_descriptor_leak_over_many_send_cycles(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    gc.collect()
    before = open_fds()
    for i in range(200):
        if i % 2:
            vesicle = Vesicle.from_bytes(bytes([i % 256]) * (i + 1))
        else:
            vesicle = Vesicle.alloc(i + 1)
            with vesicle.buffer as buf:
                buf[:] = bytes([i % 256]) * (i + 1)
            vesicle.seal()
        received = pass_fd(pair, vesicle.fileno())
        if i % 3:
            vesicle.close()
        else:
            del vesicle  # closed by garbage collection
        view = map_vesicle(received, i + 1)
        assert view[0] == i % 256
        del view
        if i % 10 == 0:
            # A refused descriptor is closed too.
            bad = raw_memfd(4)
            with pytest.raises(VesicleError):
                map_vesicle(bad, 4)
    gc.collect()
    assert open_fds() == before

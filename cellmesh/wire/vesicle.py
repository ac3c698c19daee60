"""Vesicles: large payloads carried as sealed memfds, mapped read-only by the receiver.

A sender either allocates a vesicle and fills its buffer in place
(:meth:`Vesicle.alloc`, zero copies) or lets cellmesh copy a large ``bytes``
field into one (:meth:`Vesicle.from_bytes`, one copy). Before the descriptor
leaves the process the vesicle is *sealed* (``F_SEAL_WRITE | F_SEAL_SHRINK |
F_SEAL_GROW | F_SEAL_SEAL``): from then on nobody, the sender included, can
change or resize it, so the receiver may trust a plain read-only mapping.

The receiver (:func:`map_vesicle`) checks the seals and the size, maps the
descriptor read-only, closes the descriptor at once (the mapping keeps the
pages) and hands out a read-only ``memoryview``. The mapping is released when
the last reference to that view is dropped: no descriptor outlives the frame
that carried it.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import threading
import weakref
from typing import Final

from ..errors import LocalProtocolError, VesicleError

_REQUIRED_SEALS: Final = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
_ALL_SEALS: Final = _REQUIRED_SEALS | fcntl.F_SEAL_SEAL


class Vesicle:
    """A memfd-backed payload: writable until sealed, then immutable and sendable.

    Use it as a ``bytes`` field of a protein. ``len(v)`` is its size. The
    descriptor is closed by :meth:`close` (or the context manager, or garbage
    collection); a vesicle may be sent several times before that.
    """

    __slots__ = ("__weakref__", "_fd", "_map", "_sealed", "_size")

    def __init__(self, fd: int, size: int, *, sealed: bool) -> None:
        self._fd = fd
        self._size = size
        self._sealed = sealed
        self._map: mmap.mmap | None = None

    @classmethod
    def alloc(cls, size: int, *, name: str = "cellmesh-vesicle") -> Vesicle:
        """A new writable vesicle of ``size`` bytes (zero-filled); fill :attr:`buffer`."""
        if type(size) is not int or size <= 0:
            raise ValueError(f"vesicle size must be a positive int, got {size!r}")
        fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, size)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, size, sealed=False)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Vesicle:
        """A sealed vesicle holding a copy of ``data`` (the one copy a plain bytes field costs)."""
        view = memoryview(data).cast("B")
        vesicle = cls.alloc(view.nbytes)
        try:
            written = 0
            while written < view.nbytes:
                written += os.pwrite(vesicle._fd, view[written:], written)
            vesicle.seal()
        except BaseException:
            vesicle.close()
            raise
        return vesicle

    @property
    def buffer(self) -> memoryview:
        """A writable view of the payload; only before :meth:`seal`.

        Release every view derived from it (``del`` or ``with``) before the
        vesicle is sent: sealing needs the writable mapping gone.
        """
        if self._sealed:
            raise ValueError("this vesicle is sealed; its buffer is read-only now")
        if self._fd < 0:
            raise ValueError("this vesicle is closed")
        if self._map is None:
            self._map = mmap.mmap(self._fd, self._size, mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE)
        return memoryview(self._map)

    def seal(self) -> None:
        """Make the payload immutable (idempotent). Called automatically when sent."""
        if self._sealed:
            return
        if self._fd < 0:
            raise ValueError("this vesicle is closed")
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:
                raise LocalProtocolError(
                    "cannot seal a vesicle while views of its buffer are alive; "
                    "release them (del or `with v.buffer as b:`) before sending"
                ) from None
            self._map = None
        fcntl.fcntl(self._fd, fcntl.F_ADD_SEALS, _ALL_SEALS)
        self._sealed = True

    @property
    def sealed(self) -> bool:
        return self._sealed

    def fileno(self) -> int:
        """The memfd descriptor (owned by this vesicle)."""
        if self._fd < 0:
            raise ValueError("this vesicle is closed")
        return self._fd

    def tobytes(self) -> bytes:
        """A copy of the payload (used when it is too small to travel as a vesicle)."""
        return os.pread(self.fileno(), self._size, 0)

    def __len__(self) -> int:
        return self._size

    def close(self) -> None:
        """Release the mapping and the descriptor (idempotent)."""
        if self._map is not None:
            # If a view is still alive, its garbage collection unmaps it.
            with contextlib.suppress(BufferError):
                self._map.close()
            self._map = None
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> Vesicle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __repr__(self) -> str:
        state = "closed" if self._fd < 0 else ("sealed" if self._sealed else "writable")
        return f"<Vesicle {self._size} bytes, {state}>"


class MappedBudget:
    """Received vesicles mapped at once, in bytes and in mappings, across every
    connection that shares it (a membrane's): each mapping counts until its last
    reference is gone (the message was handled and dropped).

    A vesicle maps a peer's memfd into our address space, yet costs the peer
    no credit (its bytes are not the frame's): without this bound a client
    that parks calls (awaiting handlers, answers it never reads) could hold
    every byte of a cell's address space, so the cell's own allocations fail
    (an audit killed a neighbour under a 512 MiB limit this way, again and
    again, until its supervisor gave up), or the root's mapping count.
    """

    __slots__ = ("_lock", "count", "held", "max_bytes", "max_count")

    def __init__(self, max_bytes: int, max_count: int) -> None:
        self.max_bytes = max_bytes
        self.max_count = max_count
        self.held = 0
        self.count = 0
        # A mapping is given back by its finalizer, which runs in whichever thread
        # the garbage collector runs (a worker thread too).
        self._lock = threading.Lock()

    def take(self, length: int) -> str | None:
        """Count a mapping of ``length`` bytes; why not, if it would pass a bound."""
        with self._lock:
            if self.count >= self.max_count:
                return (f"{self.count} received vesicles are mapped, the most allowed "
                        f"({self.max_count}); retry once earlier calls are answered")
            if self.held + length > self.max_bytes:
                return (f"a vesicle of {length} bytes would pass the {self.max_bytes} bytes "
                        f"of received vesicles that may be mapped at once ({self.held} are); "
                        "retry once earlier calls are answered, or send less")
            self.held += length
            self.count += 1
            return None

    def give(self, length: int) -> None:
        """A mapping of ``length`` bytes is gone."""
        with self._lock:
            self.held -= length
            self.count -= 1


def map_vesicle(fd: int, length: int, budget: MappedBudget | None = None) -> memoryview:
    """Map a received vesicle descriptor read-only and close the descriptor.

    Raises :class:`~cellmesh.errors.VesicleError` when the descriptor is not
    a sealed memfd of exactly ``length`` bytes (a peer could otherwise change
    or shrink it under us), :class:`OverBudget` when ``budget`` has no room
    for it (nothing is mapped: the one message is refused). The descriptor is
    closed in every case.
    """
    try:
        try:
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        except OSError as exc:
            raise VesicleError(f"vesicle descriptor is not a sealable memfd ({exc})") from None
        if seals & _REQUIRED_SEALS != _REQUIRED_SEALS:
            raise VesicleError("vesicle memfd is not sealed against write/shrink/grow")
        size = os.fstat(fd).st_size
        if size != length:
            raise VesicleError(f"vesicle memfd holds {size} bytes, the frame says {length}")
        if budget is not None and (why := budget.take(length)) is not None:
            raise OverBudget(why)
        try:
            mapping = mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ)
        except BaseException:
            if budget is not None:
                budget.give(length)
            raise
        if budget is not None:
            weakref.finalize(mapping, budget.give, length)
    finally:
        os.close(fd)
    return memoryview(mapping)


class OverBudget(Exception):
    """A received vesicle does not fit its :class:`MappedBudget` (the message is refused)."""

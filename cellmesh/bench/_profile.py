"""A small sampling profiler for ``cellmesh bench wire``: where a process's CPU time goes.

Theory of operation
-------------------
:class:`Sampler` arms ``ITIMER_PROF`` (a timer that counts the process's CPU
time, user and system) and, on each ``SIGPROF``, classifies the Python stack
that was running into one of :data:`CATEGORIES`:

* ``syscalls`` -- the innermost frame is on a line that calls the kernel
  (``sendmsg``, ``recvmsg_into``, ``send``, ``recv``, ``epoll.poll``, ...).
  A signal handler runs only after the C call returns, on the calling line,
  so a sample taken inside a syscall lands exactly there;
* ``encode`` -- building bodies, columns and frames (proteins, batching,
  the outbox, ``cbor2.dumps`` called from them);
* ``dispatch`` -- decoding frames and bodies, routing them, running
  handlers, matching replies to callers;
* ``scheduling`` -- Trio's run loop, task switches, wake-ups, checkpoints;
* ``spin`` -- polling the sockets before sleeping (:mod:`cellmesh.transport._spin`):
  CPU spent instead of an idle core's wake-up;
* ``other`` -- the benchmark's own loop (building the messages it sends).

A stack is classified by its innermost frame that a rule recognises, so a
protein's ``__init__`` called while decoding counts as dispatch, and the
same ``__init__`` called by the benchmark loop counts as other. The sampling
overhead is one small Python call per sample (every 200 us of CPU by
default), a few per cent, and the result is a *split*: multiplied by the
CPU per message measured without the profiler it gives microseconds per
message per category.
"""

from __future__ import annotations

import linecache
import signal
from collections import Counter
from types import FrameType
from typing import Any, Final

__all__ = ["CATEGORIES", "Sampler", "classify"]

CATEGORIES: Final = ("encode", "syscalls", "scheduling", "dispatch", "spin", "other")

_SYSCALL_MARKERS: Final = (
    ".sendmsg(", ".recvmsg_into(", ".recv(", ".recv_into(", ".send(", ".sendall(",
    ".poll(", ".accept(", ".connect(", ".select(", "os.read(", "os.write(",
)

# (path fragment, function names or None for any) -> category; first match wins.
_RULES: Final[tuple[tuple[str, frozenset[str] | None, str], ...]] = (
    ("<protein ", frozenset({"encode"}), "encode"),
    ("<protein ", frozenset({"decode_fields"}), "dispatch"),
    ("cellmesh/wire/batching", None, "encode"),
    ("cellmesh/transport/_outbox", None, "encode"),
    ("cellmesh/wire/codec", frozenset({
        "encode_chunks", "encode_items", "frame_bytes", "typed_array", "columns_item",
        "body_fits", "split_columns", "item_weight", "_slice_column",
    }), "encode"),
    ("cellmesh/wire/codec", None, "dispatch"),
    ("cellmesh/wire/proteins", frozenset({
        "encode", "schema_for", "column_values", "pack_columns", "enc", "check", "convert",
    }), "encode"),
    ("cellmesh/wire/proteins", None, "dispatch"),
    ("cellmesh/transport/_server_conn", frozenset({
        "_flush", "_encode_replies", "_encode_reply", "_encode_each",
    }), "encode"),
    ("cellmesh/transport/synapse", frozenset({
        "fire", "signal", "signal_nowait", "_signal_now", "_encode_one", "fire_many",
        "signal_many", "_fire", "_fire_one", "_fire_one_raw",
    }), "encode"),
    ("cellmesh/transport/_client_conn", frozenset({"fit_frame"}), "encode"),
    ("cellmesh/transport/_spin", None, "spin"),
    ("cellmesh/transport/_flusher", None, "scheduling"),
    ("cellmesh/transport/_channel", frozenset({"end_of_pass", "mark", "send"}), "scheduling"),
    ("cellmesh/transport", None, "dispatch"),
    ("cellmesh/bench/_cellmesh", frozenset({
        "on_ping", "on_tick", "on_count", "on_blob", "on_rec",
    }), "dispatch"),
    ("cellmesh/bench/", None, "other"),  # the benchmark loop (building its messages)
    ("/trio/", None, "scheduling"),
    ("/outcome/", None, "scheduling"),
)


def _line_is_syscall(frame: FrameType) -> bool:
    lineno = frame.f_lineno
    if lineno is None:
        return False
    line = linecache.getline(frame.f_code.co_filename, lineno)
    return any(marker in line for marker in _SYSCALL_MARKERS)


def classify(frame: FrameType | None) -> str:
    """The category of the stack whose innermost frame is ``frame``."""
    if frame is not None and _line_is_syscall(frame):
        return "syscalls"
    while frame is not None:
        code = frame.f_code
        path = code.co_filename.replace("\\", "/")
        for fragment, names, category in _RULES:
            if fragment in path and (names is None or code.co_name in names):
                return category
        frame = frame.f_back
    return "other"


class Sampler:
    """Counts CPU-time samples per category while armed (main thread only)."""

    def __init__(self, interval: float = 0.0002) -> None:
        self.interval = interval
        self.counts: Counter[str] = Counter()
        self._cache: dict[tuple[tuple[Any, ...], int], str] = {}
        self._previous: Any = None

    def _on_sample(self, signum: int, frame: FrameType | None) -> None:
        # Never raise: the handler runs inside whatever code was interrupted.
        try:
            self._count(frame)
        except Exception:
            self.counts["other"] += 1

    def _count(self, frame: FrameType | None) -> None:
        # Classifying walks the stack against every rule; cache by the stack's
        # code objects (and the innermost line, for syscalls) to keep it cheap.
        codes = []
        walk = frame
        while walk is not None:
            codes.append(walk.f_code)
            walk = walk.f_back
        key = (tuple(codes), (frame.f_lineno or 0) if frame is not None else 0)
        category = self._cache.get(key)
        if category is None:
            category = self._cache[key] = classify(frame)
        self.counts[category] += 1

    def install(self) -> None:
        """Install the SIGPROF handler (from the main thread); sampling starts with :meth:`arm`."""
        self._previous = signal.signal(signal.SIGPROF, self._on_sample)

    def arm(self) -> None:
        """Start counting samples afresh (any thread)."""
        self.counts.clear()
        signal.setitimer(signal.ITIMER_PROF, self.interval, self.interval)

    def disarm(self) -> dict[str, int]:
        """Stop sampling (any thread); return the sample count of every category."""
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        return {c: self.counts.get(c, 0) for c in CATEGORIES}

    def start(self) -> None:
        """Install and arm (main thread)."""
        self.install()
        self.arm()

    def stop(self) -> dict[str, int]:
        """Disarm and restore the previous SIGPROF handler; return the counts."""
        counts = self.disarm()
        signal.signal(signal.SIGPROF, self._previous or signal.SIG_DFL)
        return counts

"""Server process of one ``cellmesh bench wire`` measurement.

Usage: ``python -m cellmesh.bench.wire_server KIND SOCKET``. Listens on the
AF_UNIX path ``SOCKET``, prints ``READY`` on stdout once connectable, then
serves connections until its stdin reaches EOF (the orchestrator closed it or
died) or it is killed. Kinds: see :data:`SERVER_KINDS`.

The lines ``profile start`` and ``profile stop`` on stdin arm and disarm the
sampling profiler (:mod:`._profile`); ``stop`` answers with one JSON line
``{category: samples}`` on stdout.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Sequence
from typing import Final

import trio

from . import baselines
from ._profile import Sampler

__all__ = ["SERVER_KINDS", "main"]

SERVER_KINDS: Final = (
    "raw-unix-pingpong",
    "raw-trio-pingpong",
    "raw-pipeline",
    "raw-oneway",
    "raw-bulk",
    "zmq",
    "cellmesh",
    "cellmesh-inline",
)


def _control(sampler: Sampler) -> None:
    """Serve profile commands from stdin; exit the whole process once stdin closes,
    so no server outlives the bench."""
    for line in sys.stdin.buffer:
        command = line.strip()
        if command == b"profile start":
            sampler.arm()
        elif command == b"profile stop":
            sys.stdout.write(json.dumps(sampler.disarm()) + "\n")
            sys.stdout.flush()
    os._exit(0)


def _ready() -> None:
    sys.stdout.write("READY\n")
    sys.stdout.flush()


def serve(kind: str, path: str) -> None:
    """Serve ``kind`` on ``path`` forever, printing ``READY`` once listening."""
    if kind in ("cellmesh", "cellmesh-inline"):
        from . import _cellmesh

        trio.run(_cellmesh.serve, path, kind == "cellmesh-inline", _ready)
        return
    if kind == "zmq":
        from . import _zmq

        _zmq.serve_zmq(path, _ready)
        return
    listener = baselines.listen_unix(path)
    _ready()
    if kind == "raw-unix-pingpong":
        baselines.serve_unix_pingpong(listener)
    elif kind == "raw-trio-pingpong":
        trio.run(baselines.serve_trio_pingpong, listener)
    elif kind == "raw-pipeline":
        baselines.serve_pipeline(listener)
    elif kind == "raw-oneway":
        baselines.serve_oneway(listener)
    elif kind == "raw-bulk":
        baselines.serve_raw_bulk(listener)
    else:
        raise ValueError(f"unknown server kind {kind!r}; expected one of {SERVER_KINDS}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``KIND SOCKET``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] not in SERVER_KINDS:
        sys.stderr.write(
            f"usage: python -m cellmesh.bench.wire_server {{{'|'.join(SERVER_KINDS)}}} SOCKET\n"
        )
        return 2
    sampler = Sampler()
    sampler.install()  # the handler must be set from the main thread
    threading.Thread(target=_control, args=(sampler,), name="control", daemon=True).start()
    serve(args[0], args[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())

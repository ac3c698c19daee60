"""Client process of one ``cellmesh bench wire`` measurement.

Usage: ``python -m cellmesh.bench.wire_client KIND SOCKET PARAMS_JSON``. For each
``run`` line read on stdin it performs one measured round (new connection,
warm-up, timed part) and prints one JSON line with the raw result:

* ``{"rtt_ns": [...]}`` for round-trip measurements,
* ``{"msgs": N, "seconds": t}`` for throughput measurements,
* ``{"bytes": N, "seconds": [t, ...]}`` for bulk transfers,
* ``{"error": "..."}`` if the round failed.

A ``profile`` line performs one more round under the sampling profiler
(:mod:`._profile`) and adds ``"profile": {category: samples}`` to its result.
It exits at EOF on stdin. Kinds: see :data:`CLIENT_KINDS`.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, Final

import trio

from . import baselines
from ._floors import checkpoint_floor, wake_floor
from ._params import WireParams, bulk_payload
from ._profile import Sampler

__all__ = ["CLIENT_KINDS", "main", "make_round"]

CLIENT_KINDS: Final = (
    "unix_pingpong",
    "trio_pingpong",
    "raw_pipeline",
    "raw_pipeline_rec",
    "raw_window16",
    "raw_window256",
    "raw_oneway",
    "raw_bulk",
    "zmq_pipeline",
    "zmq_oneway",
    "floor_wake16",
    "floor_wake256",
    "floor_checkpoint",
    "cm_fire16",
    "cm_fire256",
    "cm_fire256_await",
    "cm_signal_loop",
    "cm_signal_nowait",
    "cm_pipeline_rec",
    "cm_rtt",
    "cm_pipeline",
    "cm_signal",
    "cm_inline",
    "cm_vesicle",
)

Round = Callable[[], dict[str, Any]]


def make_round(kind: str, path: str, p: WireParams) -> Round:
    """Return a function that performs one measured round of ``kind`` against ``path``."""
    if kind == "unix_pingpong":
        return lambda: {"rtt_ns": baselines.client_unix_pingpong(path, p.rtt_samples, p.rtt_warmup)}
    if kind == "trio_pingpong":
        return lambda: {
            "rtt_ns": trio.run(baselines.client_trio_pingpong, path, p.rtt_samples, p.rtt_warmup)
        }
    if kind in ("raw_pipeline", "raw_pipeline_rec", "raw_window16", "raw_window256"):
        return _raw_pipeline_round(kind, path, p)
    if kind in ("floor_wake16", "floor_wake256"):
        tasks = int(kind.removeprefix("floor_wake"))
        return lambda: _rate(p.natural_msgs, trio.run(wake_floor, tasks, p.natural_msgs))
    if kind == "floor_checkpoint":
        return lambda: _rate(p.natural_msgs, trio.run(checkpoint_floor, p.natural_msgs))
    if kind == "raw_oneway":
        return lambda: {
            "msgs": p.signal_msgs,
            "seconds": baselines.client_oneway(path, p.signal_msgs, p.signal_batch, p.warmup_msgs),
        }
    if kind == "raw_bulk":
        payload = bulk_payload(p.bulk_bytes)
        return lambda: {
            "bytes": len(payload),
            "seconds": baselines.client_raw_bulk(path, payload, p.bulk_transfers, p.bulk_warmup),
        }
    if kind == "zmq_pipeline":
        from . import _zmq

        return lambda: {
            "msgs": p.pipeline_msgs,
            "seconds": _zmq.client_zmq_pipeline(path, p.pipeline_msgs, p.window, p.warmup_msgs),
        }
    if kind == "zmq_oneway":
        from . import _zmq

        return lambda: {
            "msgs": p.signal_msgs,
            "seconds": _zmq.client_zmq_oneway(path, p.signal_msgs, p.warmup_msgs),
        }
    if kind.startswith("cm_"):
        from . import _cellmesh

        return _cellmesh.make_round(kind, path, p)
    raise ValueError(f"unknown client kind {kind!r}; expected one of {CLIENT_KINDS}")


def _raw_pipeline_round(kind: str, path: str, p: WireParams) -> Round:
    """The raw pipelined client: ``raw_pipeline`` (``window`` in flight, ``raw_chunk``
    frames per refill), ``raw_pipeline_rec`` (the same with Rec's fields) and
    ``raw_window<N>`` (only as many calls in flight as the N tasks of cm_fire<N>
    have, refilled half a window at a time)."""
    msgs, window, chunk = p.pipeline_msgs, p.window, p.raw_chunk
    if kind.startswith("raw_window"):
        window = int(kind.removeprefix("raw_window"))
        msgs, chunk = p.natural_msgs, window // 2
    rec = kind == "raw_pipeline_rec"
    return lambda: {
        "msgs": msgs,
        "seconds": baselines.client_pipeline(path, msgs, window, p.warmup_msgs, chunk, rec=rec),
    }


def _rate(msgs: int, per_second: float) -> dict[str, Any]:
    return {"msgs": msgs, "seconds": msgs / per_second}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``KIND SOCKET PARAMS_JSON``; ``READY`` once set up, then one JSON
    line per ``run`` line on stdin."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3 or args[0] not in CLIENT_KINDS:
        sys.stderr.write(
            f"usage: python -m cellmesh.bench.wire_client {{{'|'.join(CLIENT_KINDS)}}} "
            "SOCKET PARAMS_JSON\n"
        )
        return 2
    kind, path, params = args[0], args[1], WireParams.from_json(args[2])
    limit = params.profile_seconds
    try:
        run = make_round(kind, path, params)
    except Exception:
        run = None
        setup_error = traceback.format_exc()
    # Set up (imports done): the orchestrator starts the first round only once
    # every worker has said so, so no round competes with workers starting.
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    for line in sys.stdin:
        command = line.strip()
        if command not in ("run", "profile"):
            continue
        result: dict[str, Any]
        if run is None:
            result = {"error": setup_error}
        else:
            sampler = Sampler() if command == "profile" else None
            try:
                if sampler is not None:
                    sampler.start()
                try:
                    result = run()
                    # ITIMER_PROF ticks with the kernel's clock (a few ms of CPU
                    # per sample): repeat the round for enough samples.
                    started = time.monotonic()
                    while sampler is not None and time.monotonic() - started < limit:
                        run()
                finally:
                    counts = sampler.stop() if sampler is not None else None
                if counts is not None:
                    result["profile"] = counts
            except Exception:
                result = {"error": traceback.format_exc()}
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

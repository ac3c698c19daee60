"""The counter cell the hot swap tests swap, as source text, and the test side of its proteins.

:func:`source` renders one version of the cell's module (its DNA is written
into the test's home as ``counter.py``); ``mode`` makes a version fail in
one of the ways a swap must survive. The proteins below share wire names
with the ones the source declares, so the tests can call the cell.
"""

from __future__ import annotations

from typing import Final

import cellmesh

#: The ways a version of the counter can be broken (or slow), for rollback tests.
MODES: Final = (
    "ok",          # a well-behaved counter
    "import",      # its module raises on import
    "bad_in",      # on_swap_in raises
    "hang",        # on_start never returns (not ready within the timeout)
    "crash",       # a task crashes right after it took over (on probation)
    "refuse_out",  # on_swap_out raises (as the OLD version)
    "stuck_out",   # on_swap_out never returns (as the OLD version)
    "slow",        # on_start takes a second (to catch a swap in progress)
    "big",         # hands over a state with a large blob
    "thread",      # starts a thread when imported (its standby cannot forget it)
    "exit_start",  # on_start raises SystemExit (not reported on the umbilical: the report pipe)
    "die_out",     # a task crashes the OLD version's process while it hands over
    "fail_later",  # Add(n=-1) crashes the process (a task raises)
    "leaky",       # changes the process when imported (env, recursion limit, logging, warnings)
    "monkey",      # monkeypatches a stdlib module when imported
    "probe",       # reports those process settings in Total.blob_sha
)

_SOURCE: Final = '''\
"""The counter of the hot swap tests: version {version!r}, mode {mode!r}."""

import hashlib
import json
import logging
import os
import sys
import warnings

import cellmesh
import trio

VERSION = {version!r}
MODE = {mode!r}
BLOB = {blob}

if MODE == "import":
    raise ImportError("version " + VERSION + " cannot be imported")

if MODE == "thread":
    import threading
    import time

    threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()

if MODE == "leaky":
    os.environ["COUNTER_LEAK"] = VERSION
    sys.setrecursionlimit(321)
    logging.basicConfig(format="OLD-" + VERSION + " %(message)s", level=logging.ERROR)
    warnings.simplefilter("error")

if MODE == "monkey":
    json._counter_leak = VERSION


@cellmesh.protein("t.swap.Add")
class Add:
    n: int


@cellmesh.protein("t.swap.Total")
class Total:
    total: int
    version: str
    blob_sha: str = ""


@cellmesh.protein("t.swap.State")
class State:
    total: int
    blob: bytes = b""


class Counter(cellmesh.Cell):
    version = VERSION

    async def on_start(self):
        self.total = 0
        self.blob = b""
        if MODE == "hang":
            await trio.sleep_forever()
        if MODE == "slow":
            await trio.sleep(1.0)
        if MODE == "exit_start":
            raise SystemExit(4)

    @cellmesh.receptor
    async def add(self, msg: Add) -> Total:
        if MODE == "fail_later" and msg.n < 0:
            self.nursery.start_soon(self._die_on_request)
        self.total += msg.n
        sha = hashlib.sha256(self.blob).hexdigest()[:16] if self.blob else ""
        if MODE == "probe":  # what this process's settings are, as the new version sees them
            root = logging.getLogger()
            sha = "|".join(str(x) for x in (
                os.environ.get("COUNTER_LEAK", "-"), sys.getrecursionlimit(),
                [getattr(h.formatter, "_fmt", None) for h in root.handlers], root.level,
                getattr(json, "_counter_leak", "-"), warnings.filters[:1],
            ))
        return Total(total=self.total, version=VERSION, blob_sha=sha)

    async def on_swap_out(self):
        if MODE == "refuse_out":
            raise KeyError("version " + VERSION + " keeps its state")
        if MODE == "stuck_out":
            await trio.sleep_forever()
        if MODE == "die_out":
            self.nursery.start_soon(self._die)
            await trio.sleep_forever()
        blob = self.blob or (bytes(range(256)) * (BLOB // 256) if BLOB else b"")
        return State(total=self.total, blob=blob)

    async def on_swap_in(self, state, old):
        if MODE == "bad_in":
            raise ValueError("cannot take the state of version " + old.version)
        if state is not None:
            self.total = state.total
            self.blob = bytes(state.blob)
        if MODE == "crash":
            self.nursery.start_soon(self._crash)

    async def _die_on_request(self):
        raise RuntimeError("version " + VERSION + " failed on request")

    async def _die(self):
        raise RuntimeError("version " + VERSION + " died while handing over")

    async def _crash(self):
        await trio.sleep(0.05)
        raise RuntimeError("version " + VERSION + " crashed after taking over")
'''


def source(version: str, mode: str = "ok", *, blob: int = 0) -> str:
    """The counter module for ``version`` failing per ``mode``; ``blob``: bytes of state."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    return _SOURCE.format(version=version, mode=mode, blob=blob)


@cellmesh.protein("t.swap.Add")
class Add:
    n: int


@cellmesh.protein("t.swap.Total")
class Total:
    total: int
    version: str
    blob_sha: str = ""

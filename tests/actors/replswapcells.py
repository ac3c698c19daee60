"""The replicated bank the group swap tests swap, as source text, and the test side of its proteins.

:func:`source` renders one version of the bank's module (its DNA is written
into the test's home as ``bankcell.py``, entry ``bankcell:Bank``): the
bank of :mod:`cellmesh.testing.bank` (so ``apply`` is the same in every
version: a rolling swap runs both versions on one log) with a ``version``
and a query that says which code answers. ``mode`` breaks a version in one
of the ways a group swap must survive.
"""

from __future__ import annotations

from typing import Final

import cellmesh

#: The ways a version can be broken.
MODES: Final = (
    "ok",      # a well-behaved bank
    "import",  # its module raises on import
    "start",   # on_start raises (every start of a replica on this code fails)
    "hang",    # on_start never returns (never ready)
    "die",     # serves, then crashes 0.3 s after it started (in its catch-up or probation)
    "liar",    # hostile: claims in its stats to lead and to have applied everything, floods
               # its peers' sockets with garbage, and stalls in apply (it never catches up)
)

_SOURCE: Final = '''\
"""The bank of the group swap tests: version {version!r}, mode {mode!r}."""

import os
import socket
import threading
import time

import cellmesh
import trio
from cellmesh.actors.control import ReplicaStats
from cellmesh.testing.bank import Bank as _Bank

VERSION = {version!r}
MODE = {mode!r}

if MODE == "import":
    raise ImportError("version " + VERSION + " cannot be imported")


@cellmesh.protein("t.replswap.WhichCode")
class WhichCode:
    pass


@cellmesh.protein("t.replswap.Code")
class Code:
    version: str


class Bank(_Bank):
    version = VERSION

    async def on_start(self) -> None:
        if MODE == "start":
            raise RuntimeError("version " + VERSION + " refuses to start")
        if MODE == "hang":
            await trio.sleep_forever()
        if MODE == "die":
            self.nursery.start_soon(_die)
        if MODE == "liar":
            # its own thread and Trio run: the stalls in apply must not silence the lies
            threading.Thread(target=trio.run, args=(_lie,), daemon=True).start()
            self.nursery.start_soon(_flood_peers)

    def apply(self, command, meta):
        if MODE == "liar":
            time.sleep(1.0)  # blocks the replica: it never catches up
        return super().apply(command, meta)

    @cellmesh.query
    def which(self, q: WhichCode) -> Code:
        return Code(version=VERSION)


async def _die() -> None:
    await trio.sleep(0.3)
    raise RuntimeError("version " + VERSION + " dies after it started")


async def _lie() -> None:
    me = int(os.environ["CELL_REPLICA_ID"])
    huge = 10**12
    lie = ReplicaStats(replica=me, role="leader", term=10**9, leader=me, commit_index=huge,
                       applied_index=huge, last_index=huge, voters=[0, 1, 2], learners=[])
    async with cellmesh.Synapse.grow(
        "mitosis", socket_path=os.environ["CELL_UMBILICAL"], client_name="liar"
    ) as syn:
        while True:
            await syn.signal(lie)
            await trio.sleep(0.005)


async def _flood_peers() -> None:
    me = os.environ["CELL_REPLICA_ID"]
    peers = [p.split("=", 1)[1] for p in os.environ["CELL_REPLICA_PEERS"].split(",")
             if not p.startswith(me + "=")]
    junk = bytes(range(256)) * 16
    while True:
        for path in peers:
            sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                await sock.connect(path)
                await sock.send(junk)
            except OSError:
                pass
            finally:
                sock.close()
        await trio.sleep(0.02)
'''


def source(version: str, mode: str = "ok") -> str:
    """The bank's module for ``version`` broken as ``mode`` says (one of :data:`MODES`)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    return _SOURCE.format(version=version, mode=mode)


@cellmesh.protein("t.replswap.WhichCode")
class WhichCode:
    """Ask which version of the code answers."""


@cellmesh.protein("t.replswap.Code")
class Code:
    """The version that answered."""

    version: str


__all__ = ["MODES", "Code", "WhichCode", "source"]

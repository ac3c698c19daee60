"""Transport: the Trio drivers that carry wire frames over Unix sockets.

Layer 2 of cellmesh (``wire < transport < sandbox < consensus < actors <
ledger < testing < bench < cli``). It may import the leaves
(:mod:`cellmesh.errors`, :mod:`cellmesh.config`, :mod:`cellmesh._util`) and
:mod:`cellmesh.wire`; nothing above it.

* :mod:`~cellmesh.transport.membrane` -- the server of a cell (listener,
  accept loop, connection cap, drain); :mod:`~cellmesh.transport._server_conn`
  serves one accepted connection (handshake, reader/owner tasks, call ids,
  idle timeout) and :mod:`~cellmesh.transport._answers` its outbound side
  (replies, errors, credit returned once the answers are written).
* :mod:`~cellmesh.transport.synapse` -- the client (calls, signals,
  reconnect, cancellation across the socket); its outbound side is
  :mod:`~cellmesh.transport._outbox` (single messages queued during a
  scheduler pass, framed and credited at its end).
* :mod:`~cellmesh.transport.aio` -- the same client for asyncio programs,
  and :mod:`~cellmesh.transport.blocking` a blocking one for scripts (its
  own loop in a thread); both drive the sans-I/O
  :mod:`~cellmesh.transport._client_core` (hello, credit, calls, replies).
* :mod:`~cellmesh.transport._channel` -- one socket's framed I/O, both sides
  (the only code that calls ``send``/``recv``, SCM_RIGHTS included);
  :mod:`~cellmesh.transport._fds` holds received descriptors only while a
  frame may claim them (every driver, the asyncio client's too);
  :mod:`~cellmesh.transport._flusher` writes what each channel queued, once
  per scheduler pass.
* :mod:`~cellmesh.transport._dispatch` -- handlers and receptors, run inline
  until they suspend.
* :mod:`~cellmesh.transport._sockets` -- binding and adopting listening
  Unix sockets safely.

The public names are re-exported by :mod:`cellmesh` itself, where users
import them (``cellmesh.Synapse``, ``cellmesh.open_membrane``).
"""

from __future__ import annotations

from ._dispatch import Receptors
from ._options import MembraneOptions, MembraneStats
from .membrane import Membrane, open_membrane
from .synapse import Synapse, SynapseOptions

__all__ = [
    "Membrane",
    "MembraneOptions",
    "MembraneStats",
    "Receptors",
    "Synapse",
    "SynapseOptions",
    "open_membrane",
]

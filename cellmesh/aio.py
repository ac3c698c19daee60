"""The asyncio client: ``import cellmesh.aio`` or ``from cellmesh import aio``, then
``async with cellmesh.aio.Synapse.connect("cell") as syn``. It lives in
:mod:`cellmesh.transport.aio`; this module names it where the docs do."""

from __future__ import annotations

from .transport.aio import Synapse

__all__ = ["Synapse"]

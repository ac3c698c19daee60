"""The command line's client of the root's control socket (one for every command)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from ..actors.errors import RootNotRunning
from ..config import Paths
from ..errors import CellUnavailable
from ..transport.synapse import Synapse


@contextlib.asynccontextmanager
async def open_root(paths: Paths) -> AsyncIterator[Synapse]:
    """A synapse to the root at ``paths.umbilical``.

    Raises :class:`~cellmesh.actors.errors.RootNotRunning` when nothing
    listens there, or when the root goes away while the block uses it.
    """
    try:
        async with Synapse.grow(
            "mitosis", socket_path=paths.umbilical, client_name="cellmesh-cli",
            connect_timeout=10.0,
        ) as syn:
            yield syn
    except CellUnavailable:
        raise RootNotRunning(str(paths.umbilical)) from None


async def control_call(paths: Paths, msg: Any) -> Any:
    """Send one control request to the root and return its answer."""
    async with open_root(paths) as syn:
        return await syn.fire(msg)


__all__ = ["control_call", "open_root"]

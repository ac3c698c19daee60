"""The cellmesh side of ``cellmesh bench wire`` (placeholder until the wire layer lands)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cellmesh

from ._params import WireParams

_REQUIRED = ("protein", "Receptors", "Membrane", "Synapse", "Vesicle")


def unavailable_reason() -> str | None:
    """Return why the cellmesh side cannot run, or ``None``."""
    missing = [n for n in _REQUIRED if not hasattr(cellmesh, n)]
    if missing:
        return "cellmesh does not export " + ", ".join(missing) + " yet"
    return None


async def serve(path: str, inline: bool, ready: Callable[[], None]) -> None:
    """Serve the bench receptors on ``path``."""
    raise NotImplementedError(unavailable_reason())


def make_round(kind: str, path: str, p: WireParams) -> Callable[[], dict[str, Any]]:
    """Return one measured round of ``kind``."""
    raise NotImplementedError(unavailable_reason())

"""Frame kinds and the undecoded body type: the bottom of the wire layer (docs/protocol.md 4).

Pure; re-exported by :mod:`cellmesh.wire.codec`, which is where callers take them from.
"""

from __future__ import annotations

import enum
from typing import Any, TypeAlias


class Kind(enum.IntEnum):
    """Frame kinds; the first element of every frame array."""

    HELLO = 0
    CALL = 1
    REPLY = 2
    ERROR = 3
    SIGNAL = 4
    CANCEL = 5
    CREDIT = 6
    GOAWAY = 7
    BATCH = 8
    COLUMNS = 9


Body: TypeAlias = list[Any]
"""An undecoded protein value: ``[wire_name, field, ...]``."""


__all__ = ["Body", "Kind"]

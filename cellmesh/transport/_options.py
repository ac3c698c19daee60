"""A membrane's tunables and counters (values shared by the membrane and its connections)."""

from __future__ import annotations

from typing import Final

import attrs

from ..config import check_positive_int, check_seconds
from ..wire import codec
from ..wire.proteins import DEFAULT_VESICLE_THRESHOLD

DEFAULT_MAX_CONCURRENCY: Final = 256
DEFAULT_CREDIT_CALLS: Final = 4096
DEFAULT_CREDIT_BYTES: Final = 32 * 1024 * 1024
HELLO_TIMEOUT: Final = 10.0


@attrs.define(kw_only=True)
class MembraneOptions:
    """Tunables of a membrane; every one has a sensible default."""

    max_frame_size: int = codec.DEFAULT_MAX_FRAME_SIZE
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    credit_calls: int = DEFAULT_CREDIT_CALLS
    credit_bytes: int = DEFAULT_CREDIT_BYTES
    vesicle_threshold: int = DEFAULT_VESICLE_THRESHOLD
    hello_timeout: float = HELLO_TIMEOUT
    #: Announce client sessions in the hello (a replicated cell deduplicates
    #: resent calls); see docs/protocol.md section 17.
    sessions: bool = False

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad option."""
        codec.check_max_frame_size(self.max_frame_size)
        for name in ("max_concurrency", "credit_calls", "credit_bytes", "vesicle_threshold"):
            check_positive_int(name, getattr(self, name))
        check_seconds("hello_timeout", self.hello_timeout)


@attrs.define(kw_only=True)
class MembraneStats:
    """Counters a membrane keeps (cheap increments on the hot path)."""

    connections: int = 0
    open_connections: int = 0
    calls: int = 0
    signals: int = 0
    errors: int = 0
    cancelled: int = 0
    protocol_errors: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

"""A membrane's tunables and counters (values shared by the membrane and its connections)."""

from __future__ import annotations

import resource
from typing import Final

import attrs

from ..config import check_positive_int, check_seconds
from ..errors import ConfigError
from ..wire import codec
from ..wire.proteins import DEFAULT_VESICLE_THRESHOLD

DEFAULT_MAX_CONCURRENCY: Final = 256
DEFAULT_CREDIT_CALLS: Final = 4096
DEFAULT_CREDIT_BYTES: Final = 32 * 1024 * 1024
HELLO_TIMEOUT: Final = 10.0
#: A connection with nothing in flight and no frame for this long gets a goaway.
IDLE_TIMEOUT: Final = 60.0
#: Connections one membrane serves at once; more are refused (CONNECTION_LIMIT).
DEFAULT_MAX_CONNECTIONS: Final = 256
#: Received descriptors no frame has claimed yet, across a membrane's connections.
DEFAULT_MAX_HELD_FDS: Final = 256
#: Unsent reply bytes per connection past which no new handler starts.
DEFAULT_MAX_QUEUED_BYTES: Final = 1024 * 1024
#: After an idle goaway, the client has this long to close before the membrane does.
IDLE_GRACE: Final = 10.0
#: Received vesicles a membrane keeps mapped at once (across its connections).
DEFAULT_MAX_MAPPED_VESICLES: Final = 1024
#: Their bytes, for a process without an address-space limit.
UNLIMITED_MAPPED_BYTES: Final = 4 << 30
#: The least byte budget, however tight the process's limit.
MIN_MAPPED_BYTES: Final = 16 << 20


def default_mapped_bytes() -> int:
    """Bytes of received vesicles a membrane may keep mapped: a quarter of this process's
    address-space limit (``RLIMIT_AS``, what a cell's memory limit sets), at least 16
    MiB; 4 GiB without a limit."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return UNLIMITED_MAPPED_BYTES
    return max(MIN_MAPPED_BYTES, min(UNLIMITED_MAPPED_BYTES, soft // 4))


@attrs.define(kw_only=True)
class MembraneOptions:
    """Tunables of a membrane; every one has a sensible default.

    The bounds that keep a hostile peer from taking a cell's memory and
    descriptors (docs/security.md, "Denial of service"):

    * ``max_frame_size``: the largest frame accepted after the hello (the
      hello itself is limited to ``MAX_HELLO_SIZE``, 64 KiB);
    * ``credit_calls``/``credit_bytes``: calls and payload bytes a client may
      have in flight; credit comes back only once the answers were written;
    * ``max_queued_bytes``: unsent reply bytes (or 64 unsent descriptors)
      past which no new handler starts on that connection;
    * ``max_connections``: connections served at once (more are refused with
      ``CONNECTION_LIMIT``); ``max_held_fds``: descriptors the connections
      may hold that no frame has claimed yet, together;
    * ``max_mapped_bytes``/``max_mapped_vesicles``: received vesicles the
      membrane keeps mapped at once, across its connections, until the
      messages holding them are gone (default: a quarter of the process's
      address-space limit, at least 16 MiB, 4 GiB without one; 1024
      mappings); a vesicle past them fails its one call with a field error;
    * ``hello_timeout``: time from accept to a complete hello;
      ``idle_timeout``: a connection with nothing in flight that sends no
      frame for this long gets a goaway (``IDLE_TIMEOUT``) and is closed if
      it does not close within ``idle_grace``.
    """

    max_frame_size: int = codec.DEFAULT_MAX_FRAME_SIZE
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    credit_calls: int = DEFAULT_CREDIT_CALLS
    credit_bytes: int = DEFAULT_CREDIT_BYTES
    vesicle_threshold: int = DEFAULT_VESICLE_THRESHOLD
    hello_timeout: float = HELLO_TIMEOUT
    idle_timeout: float = IDLE_TIMEOUT
    idle_grace: float = IDLE_GRACE
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_held_fds: int = DEFAULT_MAX_HELD_FDS
    max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES
    max_mapped_bytes: int = attrs.field(factory=default_mapped_bytes)
    max_mapped_vesicles: int = DEFAULT_MAX_MAPPED_VESICLES
    #: Announce client sessions in the hello (a replicated cell deduplicates
    #: resent calls); see docs/protocol.md section 17.
    sessions: bool = False
    #: Send a failed handler's traceback to the caller (``HANDLER_FAILED``). The
    #: root's umbilicals do not: their callers are untrusted cells, which learn
    #: the refusal's type and message, not the root's code.
    send_tracebacks: bool = True

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad option."""
        codec.check_max_frame_size(self.max_frame_size)
        for name in ("max_concurrency", "credit_calls", "credit_bytes", "vesicle_threshold",
                     "max_connections", "max_held_fds", "max_queued_bytes",
                     "max_mapped_bytes", "max_mapped_vesicles"):
            check_positive_int(name, getattr(self, name))
        for name in ("hello_timeout", "idle_timeout", "idle_grace"):
            check_seconds(name, getattr(self, name))
        for name in ("sessions", "send_tracebacks"):
            if type(getattr(self, name)) is not bool:
                raise ConfigError(name, f"must be True or False, got {getattr(self, name)!r}")


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
    refused: int = 0
    #: Accepts that failed for want of descriptors or memory (EMFILE, ENFILE, ...).
    accept_failures: int = 0
    idle_closed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

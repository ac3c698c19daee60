"""The exception hierarchy: one root, split by who is to blame.

Every exception cellmesh raises on purpose derives from :class:`CellmeshError`.
Below it the tree says whose fault a failure is, so callers can decide what to
do without reading messages:

* :class:`ConfigError` -- the local user or operator gave bad input (an
  environment value, a manifest key, a CLI argument).
* :class:`ProtocolError` -- bytes on a connection broke the wire protocol.
  :class:`LocalProtocolError` means *we* were about to send something invalid
  (a bug or a bad argument on this side); :class:`RemoteProtocolError` means the
  peer sent it. Both carry a stable numeric :attr:`ProtocolError.code` that is
  also what travels in an ``error`` frame. :class:`ReplyRefused` is what a
  call to a replicated cell raises when its connection ended that way: the
  cell answered, and this client refused the frame (never resent).
* :class:`CellUnavailable` -- the transport to a cell is gone or never came up
  (the OS or the peer broke it); :class:`ConnectionClosed` -- *we* closed it.
* :class:`RemoteCellError` -- the remote handler raised. It is rebuilt from
  data (type name, message, traceback text); no name the peer sent is ever
  imported or evaluated. Its subclass is chosen by the error code, never by
  the peer's type name: :class:`NoReceptor` (the cell has no receptor for
  the protein), :class:`RemoteProteinError` (the cell could not read the
  message: unknown protein, schema mismatch, bad fields).
  :class:`UnexpectedReply` -- the remote cell answered with a protein the
  request's declared reply type does not allow.

Errors carry their facts as attributes; nothing is ever classified by message
text.
"""

from __future__ import annotations

from typing import Final


class CellmeshError(Exception):
    """Root of every error cellmesh raises on purpose."""


class ConfigError(CellmeshError, ValueError):
    """Local input (env value, manifest, CLI argument, API argument) is invalid.

    ``source`` names where the value came from (an env var, a file and key, an
    argument name) so the message can point at it.
    """

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


# --------------------------------------------------------------------------
# Wire protocol errors. The codes are part of the protocol (docs/protocol.md)
# and must never be renumbered.


class ErrorCode:
    """Stable numeric codes carried in ``error`` frames (see docs/protocol.md)."""

    # Connection-level (the connection is closed after sending them).
    MALFORMED_FRAME: Final = 1
    FRAME_TOO_LARGE: Final = 2
    UNKNOWN_FRAME_KIND: Final = 3
    BAD_HANDSHAKE: Final = 4
    VERSION_MISMATCH: Final = 5
    FLOW_CONTROL: Final = 6
    BAD_VESICLE: Final = 7
    DUPLICATE_CALL_ID: Final = 8
    #: Sent by a membrane in place of its hello when it already serves its
    #: maximum number of connections (try again later).
    CONNECTION_LIMIT: Final = 9
    # Call-level (the connection stays open).
    UNKNOWN_PROTEIN: Final = 20
    SCHEMA_MISMATCH: Final = 21
    BAD_FIELDS: Final = 22
    NO_HANDLER: Final = 23
    HANDLER_FAILED: Final = 30
    CANCELLED: Final = 31
    SHUTTING_DOWN: Final = 32
    BAD_REPLY: Final = 33
    #: The code of the goaway a membrane sends a connection idle for its idle_timeout.
    IDLE_TIMEOUT: Final = 34


class ProtocolError(CellmeshError):
    """Bytes on a connection violated the wire protocol.

    Raised by the sans-I/O codec for anything malformed, and never any other
    exception type. ``code`` is an :class:`ErrorCode` value.
    """

    code: int = ErrorCode.MALFORMED_FRAME

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that violate the protocol; the connection is closed."""


class LocalProtocolError(ProtocolError):
    """We were about to send something the protocol forbids (our bug or bad input)."""


class ReplyRefused(RemoteProtocolError):
    """A cell that deduplicates retries answered with a frame this client refuses.

    Raised to the calls in flight on a connection to a replicated cell (its
    hello announces sessions) that this client closed because of what the
    cell sent: a frame over this client's limits (its decode budget, its
    ``max_frame_size``) or one that breaks the protocol. It is raised at once
    and the call is never resent: the cell did answer, and every copy resent
    would be answered the same way.

    What it means for the call: a command *may have taken effect* -- the
    cell answered it, so it was applied unless that unreadable answer was
    an error or a session fault -- and must not be resent blindly (check its
    effect first); a query simply failed. The refused frame is never
    decoded, so this client cannot tell whose answers it held: every call in
    flight on that connection gets this error, including calls whose answers
    were still to come (their outcome is unknown only because the connection
    closed; a command among them may have taken effect as well).
    ``in_flight`` says how many got it (1: the frame came while this call
    alone waited for an answer). ``cell`` names the cell, ``reason`` says
    why the frame was refused, ``code`` is the :class:`ErrorCode` this
    client sent the cell when it closed the connection.

    A plain cell's calls get :class:`CellUnavailable` naming the same
    reason instead, as for any connection the cell broke.
    """

    def __init__(self, cell: str, reason: str, *, code: int, in_flight: int) -> None:
        if in_flight > 1:
            text = (
                f"a frame from cell {cell!r} was refused by this client with {in_flight} calls "
                f"in flight, this one among them: {reason}; the frame was not decoded, so it "
                "may have held the answer to any of them: a command may have taken effect "
                "(check before resending it), a query simply failed"
            )
        else:
            text = (
                f"the reply of cell {cell!r} was refused by this client: {reason}; for a "
                "command it may have taken effect (the cell answered it: check before "
                "resending it), for a query it simply failed"
            )
        super().__init__(text, code=code)
        self.cell = cell
        self.reason = reason
        self.in_flight = in_flight


class MalformedFrame(RemoteProtocolError):
    """A frame's bytes are not valid CBOR, or not the shape its kind requires."""

    code = ErrorCode.MALFORMED_FRAME


class FrameTooLarge(RemoteProtocolError):
    """A frame's declared length exceeds the negotiated maximum frame size."""

    code = ErrorCode.FRAME_TOO_LARGE

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"frame of {length} bytes exceeds the {limit}-byte limit")
        self.length = length
        self.limit = limit


class UnknownFrameKind(RemoteProtocolError):
    """A frame's kind number is not one this protocol version defines."""

    code = ErrorCode.UNKNOWN_FRAME_KIND


class HandshakeError(RemoteProtocolError):
    """The hello exchange failed (missing, repeated, or malformed hello)."""

    code = ErrorCode.BAD_HANDSHAKE


class VersionMismatch(HandshakeError):
    """The peer speaks a protocol version we do not."""

    code = ErrorCode.VERSION_MISMATCH

    def __init__(self, ours: int, theirs: object) -> None:
        super().__init__(f"peer speaks protocol version {theirs!r}, we speak {ours}")
        self.ours = ours
        self.theirs = theirs


class FlowControlError(RemoteProtocolError):
    """The peer sent more calls or signals than it had credit for."""

    code = ErrorCode.FLOW_CONTROL


class VesicleError(RemoteProtocolError):
    """A vesicle reference or its file descriptor is invalid (unsealed, short, missing)."""

    code = ErrorCode.BAD_VESICLE


# --------------------------------------------------------------------------
# Protein (message schema) errors: the connection survives them.


class ProteinError(CellmeshError):
    """A message does not fit a known protein schema."""

    code: int = ErrorCode.BAD_FIELDS


class UnknownProtein(ProteinError):
    """No protein with this wire name is registered on the receiving side."""

    code = ErrorCode.UNKNOWN_PROTEIN

    def __init__(self, wire_name: object) -> None:
        super().__init__(
            f"unknown protein {wire_name!r}: the receiving process defines no protein of "
            "that wire name (it must import the module that declares it)"
        )
        self.wire_name = wire_name


class SchemaMismatch(ProteinError):
    """Both peers know the wire name but their schema fingerprints differ.

    Raised by the receiver: ``ours`` is the receiver's fingerprint, ``theirs``
    the sender's. The message names them by role, so it reads the same on
    either side (a cell's refusal travels to its caller as text).
    """

    code = ErrorCode.SCHEMA_MISMATCH

    def __init__(self, wire_name: str, ours: str, theirs: str) -> None:
        super().__init__(
            f"protein {wire_name!r} has schema {theirs} at the sender but {ours} at the "
            "receiver (the two sides define it differently)"
        )
        self.wire_name = wire_name
        self.ours = ours
        self.theirs = theirs


class FieldError(ProteinError):
    """A protein's fields are missing, extra, or of the wrong type.

    ``field`` names the top-level field at fault (None when the field count
    itself is wrong); ``problem`` describes it.
    """

    code = ErrorCode.BAD_FIELDS

    def __init__(self, wire_name: str, problem: str, field: str | None = None) -> None:
        super().__init__(f"protein {wire_name!r}: {problem}")
        self.wire_name = wire_name
        self.problem = problem
        self.field = field


# --------------------------------------------------------------------------
# Calls and connections.


class CellUnavailable(CellmeshError):
    """The cell cannot be reached: no socket, refused, or the connection broke.

    ``socket_path`` names the membrane socket tried; ``cell`` the cell name.
    Calls in flight when a connection breaks fail with this error; the next
    call on the same synapse reconnects.
    """

    def __init__(self, cell: str, socket_path: str, reason: str) -> None:
        super().__init__(f"cell {cell!r} is unavailable at {socket_path}: {reason}")
        self.cell = cell
        self.socket_path = socket_path
        self.reason = reason


class OutcomeUnknown(CellmeshError):
    """A call was sent but no answer came back, after every retry: it may or may not
    have taken effect.

    Raised only for calls to a cell that deduplicates retries (a replicated
    cell's client session): the synapse resent the call, with the same
    session and sequence number, until ``give_up_after`` seconds passed or
    the cell said it can no longer tell (its session expired). Never a
    success and never a plain failure: a call that was certainly not applied
    raises :class:`CellUnavailable` (it never left this process) or
    :class:`RemoteCellError` instead, and one whose answer came back but was
    refused by this client's limits raises :class:`ReplyRefused`. ``cell``
    names the cell, ``reason`` says why the outcome is unknown.
    """

    def __init__(self, cell: str, reason: str) -> None:
        super().__init__(f"the outcome of a call to cell {cell!r} is unknown: {reason}")
        self.cell = cell
        self.reason = reason


class UnexpectedReply(CellmeshError):
    """The cell answered a request with a protein its declared reply type does not allow.

    The request class declares its reply with ``cellmesh.Request[Reply]``;
    the cell at fault is the remote one. ``cell`` names it, ``request`` the
    request's wire name, ``expected`` the wire names (or ``None``) allowed,
    ``got`` what came. The connection stays usable.
    """

    def __init__(self, *, cell: str, request: str, expected: tuple[str, ...], got: str) -> None:
        super().__init__(
            f"cell {cell!r} answered {request} with {got}; expected {' or '.join(expected)}"
        )
        self.cell = cell
        self.request = request
        self.expected = expected
        self.got = got


class ConnectionClosed(CellmeshError):
    """The operation was attempted on a synapse or membrane *we* already closed."""


class MembraneInUse(CellmeshError):
    """A live process is already serving on this socket path; it is never stolen."""

    def __init__(self, socket_path: str) -> None:
        super().__init__(
            f"{socket_path} is in use by a live membrane; "
            "stop that cell first or choose another name"
        )
        self.socket_path = socket_path


class RemoteCellError(CellmeshError):
    """The remote cell failed the call: its handler raised, or it refused the call.

    Rebuilt from data only. ``type_name`` is the remote exception's qualified
    name as text (never imported), ``remote_message`` its message,
    ``remote_traceback`` the formatted remote traceback (or None), ``code`` an
    :class:`ErrorCode` value, ``cell`` the peer's name.
    """

    def __init__(
        self,
        *,
        cell: str,
        code: int,
        type_name: str,
        message: str,
        remote_traceback: str | None,
    ) -> None:
        super().__init__(f"cell {cell!r} failed the call: {type_name}: {message}")
        self.cell = cell
        self.code = code
        self.type_name = type_name
        self.remote_message = message
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        text = super().__str__()
        if self.remote_traceback:
            text += "\n\nRemote traceback:\n" + self.remote_traceback.rstrip()
        return text


class NoReceptor(RemoteCellError):
    """The cell has no receptor for the message's protein (error code ``NO_HANDLER``).

    The cell read the message and keeps serving; ``type_name`` and
    ``remote_message`` are the cell's report, as data.
    """

    def __str__(self) -> str:
        return f"cell {self.cell!r}: {self.remote_message}"


class RemoteProteinError(RemoteCellError):
    """The cell could not read the message: ``code`` is ``UNKNOWN_PROTEIN`` (it does not
    know the wire name), ``SCHEMA_MISMATCH`` (its schema of it differs) or ``BAD_FIELDS``.

    The cell keeps serving; the message says which protein and why.
    """

    def __str__(self) -> str:
        return f"cell {self.cell!r} could not read the message: {self.remote_message}"


#: The RemoteCellError subclass of each call-level error code (others: RemoteCellError).
_REMOTE_ERRORS: Final[dict[int, type[RemoteCellError]]] = {
    ErrorCode.NO_HANDLER: NoReceptor,
    ErrorCode.UNKNOWN_PROTEIN: RemoteProteinError,
    ErrorCode.SCHEMA_MISMATCH: RemoteProteinError,
    ErrorCode.BAD_FIELDS: RemoteProteinError,
}


def remote_error(
    *, cell: str, code: int, type_name: str, message: str, remote_traceback: str | None
) -> RemoteCellError:
    """The error a caller gets for a call-level error frame, its class chosen by ``code``.

    Never by ``type_name``: that is the peer's text, kept as data.
    """
    cls = _REMOTE_ERRORS.get(code, RemoteCellError)
    return cls(cell=cell, code=code, type_name=type_name, message=message,
               remote_traceback=remote_traceback)


__all__ = [
    "CellUnavailable",
    "CellmeshError",
    "ConfigError",
    "ConnectionClosed",
    "ErrorCode",
    "FieldError",
    "FlowControlError",
    "FrameTooLarge",
    "HandshakeError",
    "LocalProtocolError",
    "MalformedFrame",
    "MembraneInUse",
    "NoReceptor",
    "OutcomeUnknown",
    "ProteinError",
    "ProtocolError",
    "RemoteCellError",
    "RemoteProtocolError",
    "RemoteProteinError",
    "ReplyRefused",
    "SchemaMismatch",
    "UnexpectedReply",
    "UnknownFrameKind",
    "UnknownProtein",
    "VersionMismatch",
    "VesicleError",
    "remote_error",
]

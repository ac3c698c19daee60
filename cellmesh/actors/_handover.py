"""The cell side of a hot swap: the old process hands over, the new one takes over.

Theory of operation
-------------------
The root decides a swap (:mod:`cellmesh.actors.swap`); the two processes of
the cell do their parts over their umbilical (the contract is docs/swap.md):

* **Every serving process** that has a root and a go token runs
  :func:`serve_orders`: a long poll (:class:`~cellmesh.actors.control.NextOrder`)
  the root answers with :class:`~cellmesh.actors.control.Suspend` when the
  process must hand over, or with None after a while (then it polls again).
* **The old process**, on ``Suspend(seconds)``: its membrane stops accepting
  and drains (goaway; new connections wait in the root's listen backlog), then
  ``on_swap_out`` returns the state, which goes to the root as the CBOR of its
  protein (:class:`~cellmesh.actors.control.SwapOut`; a large one as a
  vesicle). The reply is the verdict: resume serving (the new version failed:
  the state never left this process's memory) or exit without ``on_stop``.
  If draining or the hook fails it resumes at once and says why.
* **The new process** (go byte ``s``) asks for the hand-over before
  ``on_start`` (:func:`take_over`), which the root answers once the old
  process has drained; after ``on_start`` it decodes the state and calls
  ``on_swap_in`` (:func:`apply_handover`), then reports ready and serves.
  Any failure on the way is reported (:func:`report_failure`:
  :class:`~cellmesh.actors.control.SwapInFailed` with the exception's type
  and message) before the process exits 1, so the root can name the cause.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Sequence
from typing import Any, Final, TypeVar

import attrs
import cbor2
import trio

from ..errors import CellmeshError, CellUnavailable, FieldError, ProteinError, RemoteCellError
from ..transport.membrane import Membrane
from ..transport.synapse import Synapse
from ..wire.codec import MAX_DEPTH, MAX_VESICLES_PER_FRAME, VESICLE_TAG, VesicleRef
from ..wire.proteins import (
    PROTEINS,
    DecodeContext,
    EncodeContext,
    VesicleSource,
    fingerprint,
    is_protein,
)
from ..wire.vesicle import Vesicle
from .cell import BadRootReply, Cell, CellContext, CellVersion, NoRoot, RawState
from .control import Handover, NextOrder, Suspend, SwapIn, SwapInFailed, SwapOut, SwapVerdict

T = TypeVar("T")

#: Share of a Suspend order's time the drain may use (the rest is for on_swap_out).
DRAIN_SHARE: Final = 0.6
#: How long a failure report may take before the process gives up on it.
REPORT_TIMEOUT: Final = 2.0


class SwapRefused(CellmeshError):
    """The root abandoned the swap before handing over (``reason``): exit quietly."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the swap was abandoned: {reason}")
        self.reason = reason


# ---------------------------------------------------------------- state codec

#: Vesicles a state may carry beside its CBOR (one frame holds 64; one is kept
#: for the CBOR itself).
MAX_BLOBS: Final = MAX_VESICLES_PER_FRAME - 1


@attrs.frozen(kw_only=True)
class EncodedState:
    """A state ready to travel: its protein's name and fingerprint, CBOR, and blobs.

    ``data`` is None for no state. ``blobs`` are sealed vesicles holding the
    state's large ``bytes`` fields (the CBOR refers to them by index);
    :meth:`close` releases the ones made here once they were sent.
    """

    name: str = ""
    fingerprint: str = ""
    data: bytes | None = None
    blobs: tuple[VesicleSource, ...] = ()
    owned: tuple[VesicleSource, ...] = ()

    @property
    def size(self) -> int:
        """Bytes in all: the CBOR and every blob."""
        return (len(self.data) if self.data is not None else 0) + sum(len(b) for b in self.blobs)

    def close(self) -> None:
        for blob in self.owned:
            blob.close()


def encode_state(state: object) -> EncodedState:
    """Encode the protein ``state`` (or None) for a hand-over.

    A ``bytes`` field of at least the vesicle threshold becomes a vesicle (a
    :class:`~cellmesh.Vesicle` field is sent as it is, without a copy); the
    rest is CBOR. Raises TypeError when ``state`` is not a protein, and
    :class:`~cellmesh.errors.FieldError` for a field of the wrong type or
    more than :data:`MAX_BLOBS` large ones.
    """
    if state is None:
        return EncodedState()
    if not is_protein(type(state)):
        raise TypeError(
            f"on_swap_out must return a protein or None, got {type(state).__qualname__}"
        )
    ctx = EncodeContext(make_vesicle=Vesicle.from_bytes)
    try:
        body = PROTEINS.encode(state, ctx)
        data = cbor2.dumps(body)
    except BaseException:
        for blob in ctx.owned:
            blob.close()
        raise
    if len(ctx.vesicles) > MAX_BLOBS:
        for blob in ctx.owned:
            blob.close()
        raise FieldError(str(body[0]), f"more than {MAX_BLOBS} bytes fields of a vesicle's size")
    return EncodedState(
        name=str(body[0]), fingerprint=fingerprint(type(state)), data=data,
        blobs=tuple(ctx.vesicles), owned=tuple(ctx.owned),
    )


class _Refs:
    """The CBOR tag hook of a handed-over state: vesicle tags become refs to its blobs."""

    def __init__(self, blobs: Sequence[bytes | memoryview]) -> None:
        self.blobs = blobs

    def __call__(self, tag: cbor2.CBORTag, immutable: bool) -> VesicleRef:
        value = tag.value
        if (
            tag.tag != VESICLE_TAG or not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(type(v) is int for v in value)
            or not 0 <= value[0] < len(self.blobs) or len(self.blobs[value[0]]) != value[1]
        ):
            raise ValueError(f"unexpected CBOR tag {tag.tag} in the state")
        return VesicleRef(value[0], value[1])

    def resolve(self, ref: VesicleRef) -> memoryview:
        return memoryview(self.blobs[ref.index])

    def inline(self, value: Any) -> Any:
        """``value`` with every ref replaced by its blob (for a :class:`RawState`)."""
        if isinstance(value, VesicleRef):
            return self.resolve(value)
        if isinstance(value, list):
            return [self.inline(v) for v in value]
        if isinstance(value, dict):
            return {k: self.inline(v) for k, v in value.items()}
        return value


def decode_state(
    name: str, print_: str, data: bytes | memoryview | None,
    blobs: Sequence[bytes | memoryview] = (),
) -> Any:
    """The state a :class:`Handover` carries: a protein this code knows, or a :class:`RawState`.

    A protein is decoded only when this code registers ``name`` with the same
    fingerprint; otherwise the raw fields are given for ``on_swap_in`` to
    convert. Large fields arrive as read-only memoryviews of their vesicles.
    Raises :class:`ValueError` (only) for a payload that is not a valid body
    of ``name``.
    """
    if data is None:
        return None
    refs = _Refs(blobs)
    try:
        body = cbor2.loads(data, tag_hook=refs, max_depth=MAX_DEPTH)
    except (cbor2.CBORDecodeError, RecursionError, ValueError) as exc:
        raise ValueError(f"the handed-over state is not valid CBOR ({exc})") from None
    if not isinstance(body, list) or not body or body[0] != name:
        raise ValueError(f"the handed-over state is not a body of protein {name!r}")
    cls = PROTEINS.get(name)
    if cls is not None and fingerprint(cls) == print_:
        try:
            return PROTEINS.decode(body, DecodeContext(resolve=refs.resolve))
        except ProteinError as exc:
            raise ValueError(f"the handed-over state does not decode: {exc}") from None
    return RawState(wire_name=name, fingerprint=print_, fields=refs.inline(list(body[1:])))


# ---------------------------------------------------------------- the new process


async def take_over(ctx: CellContext, cell: Cell) -> Handover:
    """Ask the root for the old version's state (waits until the old one has drained)."""
    try:
        reply = await ctx.ask_root(SwapIn(token=ctx.token, version=type(cell).version))
    except RemoteCellError as exc:
        raise SwapRefused(exc.remote_message) from None
    if not isinstance(reply, Handover):
        raise BadRootReply("SwapIn", type(reply).__name__)
    return reply


async def apply_handover(cell: Cell, handover: Handover) -> None:
    """Decode the handed-over state and give it to ``on_swap_in``."""
    state = decode_state(
        handover.state_name, handover.state_fingerprint, handover.state, handover.blobs
    )
    await cell.on_swap_in(state, CellVersion(dna=handover.dna, version=handover.version))


async def staged(ctx: CellContext, stage: str, step: Awaitable[T]) -> T:
    """Await ``step``; if it raises, report the failure of ``stage`` to the root first."""
    try:
        return await step
    except SwapRefused:
        raise
    except Exception as exc:
        if not isinstance(exc, MemoryError):
            await report_failure(ctx.umbilical, ctx.token, stage, exc)
        raise


async def report_failure(syn: Synapse | None, token: str, stage: str, exc: BaseException) -> None:
    """Tell the root why this new process fails (best effort, bounded)."""
    if syn is None:
        return
    with trio.move_on_after(REPORT_TIMEOUT), contextlib.suppress(CellmeshError):
        await syn.fire(SwapInFailed(
            token=token, stage=stage, type_name=type(exc).__qualname__,
            message=str(exc)[:2000],
        ))


async def report_early_failure(
    umbilical: str, name: str, token: str, stage: str, exc: BaseException
) -> None:
    """:func:`report_failure` before the runtime has an umbilical (an import failure)."""
    with trio.move_on_after(REPORT_TIMEOUT), contextlib.suppress(CellmeshError):
        async with Synapse.grow("mitosis", socket_path=umbilical, client_name=name) as syn:
            await report_failure(syn, token, stage, exc)


# ---------------------------------------------------------------- the old process


async def serve_orders(ctx: CellContext, cell: Cell, membrane: Membrane) -> None:
    """Poll the root for orders for as long as the cell serves (see the module doc)."""
    while True:
        try:
            order = await ctx.ask_root(NextOrder(token=ctx.token))
        except (NoRoot, RemoteCellError):
            return  # no root any more (the stop is requested), or it refuses this poll
        if isinstance(order, Suspend):
            await hand_over(ctx, cell, membrane, order.seconds)
            if ctx.swapped_out:
                return


async def _say_failure(ctx: CellContext, failure: str) -> object:
    """Tell the root this process cannot hand over (``SwapOut`` with no state); its
    verdict, or None when it cannot be told."""
    try:
        return await ctx.ask_root(SwapOut(
            token=ctx.token, failure=failure, state_name="", state_fingerprint="",
            state=None, blobs=[],
        ))
    except (NoRoot, RemoteCellError, CellUnavailable):
        return None


async def hand_over(ctx: CellContext, cell: Cell, membrane: Membrane, seconds: float) -> None:
    """Suspend, export the state, and act on the root's verdict (see the module doc)."""
    deadline = trio.current_time() + seconds
    failure = ""
    encoded = EncodedState()
    drain = max(0.0, seconds * DRAIN_SHARE)
    if not await membrane.suspend(drain):
        failure = f"calls were still in flight after {drain:.1f} s of draining"
    else:
        try:
            with trio.fail_after(max(0.0, deadline - trio.current_time())):
                state = await cell.on_swap_out()
            encoded = encode_state(state)
        except trio.TooSlowError:
            failure = "on_swap_out did not return in time"
        except MemoryError:
            raise
        except Exception as exc:
            failure = f"on_swap_out failed: {type(exc).__qualname__}: {exc}"
    try:
        verdict = await ctx.ask_root(SwapOut(
            token=ctx.token, failure=failure, state_name=encoded.name,
            state_fingerprint=encoded.fingerprint, state=encoded.data,
            blobs=list(encoded.blobs),  # type: ignore[arg-type]  # vesicles are bytes fields
        ))
    except RemoteCellError as exc:
        # The root could not take the message (its state does not fit what the root
        # maps at once): say so, without the state, so the swap rolls back naming it.
        failure = f"the root refused its state ({encoded.size} bytes): {exc}"[:2000]
        verdict = await _say_failure(ctx, failure)
    except (NoRoot, CellUnavailable):
        verdict = None  # no verdict: serve on (a lost root stops the cell anyway)
    finally:
        encoded.close()
    if isinstance(verdict, SwapVerdict) and not verdict.resume and not failure:
        ctx.swapped_out = True
        ctx.request_stop("swapped out: the new version serves")
        return
    membrane.resume()


__all__ = [
    "DRAIN_SHARE",
    "MAX_BLOBS",
    "EncodedState",
    "SwapRefused",
    "apply_handover",
    "decode_state",
    "encode_state",
    "hand_over",
    "report_early_failure",
    "report_failure",
    "serve_orders",
    "staged",
    "take_over",
]

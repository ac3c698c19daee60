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
import sys
from collections.abc import Awaitable
from typing import Any, Final, TypeVar

import cbor2
import trio

from ..errors import CellmeshError, CellUnavailable, RemoteCellError
from ..transport.membrane import Membrane
from ..transport.synapse import Synapse
from ..wire.proteins import PROTEINS, DecodeContext, EncodeContext, fingerprint, is_protein
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


def encode_state(state: object) -> tuple[str, str, bytes | None]:
    """``(wire name, fingerprint, CBOR)`` of the protein ``state`` (or ``("", "", None)``).

    Every field is encoded inline (a vesicle inside the state is copied into
    the CBOR): the whole state travels as one payload. Raises TypeError when
    ``state`` is not a protein.
    """
    if state is None:
        return "", "", None
    if not is_protein(type(state)):
        raise TypeError(
            f"on_swap_out must return a protein or None, got {type(state).__qualname__}"
        )
    body = PROTEINS.encode(state, EncodeContext(threshold=sys.maxsize))
    return str(body[0]), fingerprint(type(state)), cbor2.dumps(body)


def decode_state(name: str, print_: str, data: bytes | memoryview | None) -> Any:
    """The state a :class:`Handover` carries: a protein this code knows, or a :class:`RawState`.

    A protein is decoded only when this code registers ``name`` with the same
    fingerprint; otherwise the raw fields are given for ``on_swap_in`` to
    convert. Raises :class:`ValueError` for a payload that is not a CBOR body.
    """
    if data is None:
        return None
    try:
        body = cbor2.loads(data)
    except (cbor2.CBORDecodeError, RecursionError, ValueError) as exc:
        raise ValueError(f"the handed-over state is not valid CBOR ({exc})") from None
    if not isinstance(body, list) or not body or body[0] != name:
        raise ValueError(f"the handed-over state is not a body of protein {name!r}")
    cls = PROTEINS.get(name)
    if cls is not None and fingerprint(cls) == print_:
        return PROTEINS.decode(body, DecodeContext())
    return RawState(wire_name=name, fingerprint=print_, fields=list(body[1:]))


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
    state = decode_state(handover.state_name, handover.state_fingerprint, handover.state)
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


async def hand_over(ctx: CellContext, cell: Cell, membrane: Membrane, seconds: float) -> None:
    """Suspend, export the state, and act on the root's verdict (see the module doc)."""
    deadline = trio.current_time() + seconds
    failure = ""
    name = print_ = ""
    data: bytes | None = None
    drain = max(0.0, seconds * DRAIN_SHARE)
    if not await membrane.suspend(drain):
        failure = f"calls were still in flight after {drain:.1f} s of draining"
    else:
        try:
            with trio.fail_after(max(0.0, deadline - trio.current_time())):
                state = await cell.on_swap_out()
            name, print_, data = encode_state(state)
        except trio.TooSlowError:
            failure = "on_swap_out did not return in time"
        except MemoryError:
            raise
        except Exception as exc:
            failure = f"on_swap_out failed: {type(exc).__qualname__}: {exc}"
    try:
        verdict = await ctx.ask_root(SwapOut(
            token=ctx.token, failure=failure, state_name=name, state_fingerprint=print_,
            state=data,
        ))
    except (NoRoot, RemoteCellError, CellUnavailable):
        verdict = None  # no verdict: serve on (a lost root stops the cell anyway)
    if isinstance(verdict, SwapVerdict) and not verdict.resume and not failure:
        ctx.swapped_out = True
        ctx.request_stop("swapped out: the new version serves")
        return
    membrane.resume()


__all__ = [
    "DRAIN_SHARE",
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

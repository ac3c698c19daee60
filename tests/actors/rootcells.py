"""Cells the root tests run (this file is their DNA: copied into the cache and sandboxed).

The tests import it too, for the proteins.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import ClassVar, Final

import cellmesh

#: Differs between any two processes of a cell, whatever the pid namespace.
TOKEN: Final = os.urandom(8).hex()


@cellmesh.protein("t.root.Echo")
class Echo:
    n: int


@cellmesh.protein("t.root.WhoAmI")
class WhoAmI:
    pass


@cellmesh.protein("t.root.Identity")
class Identity:
    """``pid`` is 2 in every bwrap sandbox (its own pid namespace); ``token`` is per process."""

    name: str
    pid: int
    token: str = ""


@cellmesh.protein("t.root.Slow")
class Slow:
    n: int


@cellmesh.protein("t.root.Quit")
class Quit:
    pass


@cellmesh.protein("t.root.Downs")
class Downs:
    pass


@cellmesh.protein("t.root.AwaitDown")
class AwaitDown:
    """Answered (with the DownList) once the first CellDown has arrived."""


@cellmesh.protein("t.root.DownList")
class DownList:
    downs: list[str]


@cellmesh.protein("t.root.Watch")
class Watch:
    target: str


@cellmesh.protein("t.root.Spawn")
class Spawn:
    suffix: str


@cellmesh.protein("t.root.StopKid")
class StopKid:
    suffix: str


@cellmesh.protein("t.root.Forward")
class Forward:
    target: str
    n: int


@cellmesh.protein("t.root.Dial")
class Dial:
    host: str
    port: int


@cellmesh.protein("t.root.Dialed")
class Dialed:
    reply: bytes
    error: str


@cellmesh.protein("t.root.SayReady")
class SayReady:
    times: int  # a hostile cell repeating CellReady on its umbilical


@cellmesh.protein("t.root.Raise")
class Raise:
    what: str  # "system-exit" | "base" (a library's own BaseException)


class Stop(BaseException):
    """A BaseException subclass of the kind some libraries define."""


class Boastful(cellmesh.Cell):
    """Reports a version no operator should have to read: a megabyte, with escapes."""

    version = "\x1b[2J\x1b[31mPWNED\nstore  root  running\r" + "v" * 1_000_000

    @cellmesh.receptor
    async def echo(self, msg: Echo) -> Echo:
        return Echo(msg.n)


class Echoer(cellmesh.Cell):
    """Echoes; tells who it is; answers Slow only after a while (to be killed mid-call)."""

    @cellmesh.receptor
    async def echo(self, msg: Echo) -> Echo:
        return Echo(msg.n)

    @cellmesh.receptor
    async def who(self, msg: WhoAmI) -> Identity:
        return Identity(name=self.name, pid=os.getpid(), token=TOKEN)

    @cellmesh.receptor
    async def slow(self, msg: Slow) -> Echo:
        import trio

        await trio.sleep(60)
        return Echo(msg.n)

    @cellmesh.receptor
    async def quit(self, msg: Quit) -> None:
        await self.stop()

    @cellmesh.receptor
    async def say_ready(self, msg: SayReady) -> None:
        from cellmesh.actors.control import CellReady

        for _ in range(msg.times):
            await self._context().ask_root(CellReady(pid=os.getpid()))

    @cellmesh.receptor
    async def raise_it(self, msg: Raise) -> None:
        raise SystemExit(3) if msg.what == "system-exit" else Stop("stop here")

    @cellmesh.receptor
    async def forward(self, msg: Forward) -> Echo:
        reply: Echo = await self.call(msg.target, Echo(msg.n))
        return reply

    @cellmesh.receptor
    async def dial(self, msg: Dial) -> Dialed:
        """Open a TCP connection, send b"ping", return what comes back (or why not)."""
        import trio

        try:
            with trio.fail_after(10):
                stream = await trio.open_tcp_stream(msg.host, msg.port)
                async with stream:
                    await stream.send_all(b"ping")
                    return Dialed(reply=await stream.receive_some(64), error="")
        except (OSError, trio.TooSlowError) as exc:
            return Dialed(reply=b"", error=f"{type(exc).__name__}: {exc}")


@cellmesh.protein("t.root.Hog")
class Hog:
    """Allocate ``mib`` MiB in a task of the cell's nursery (not inside the call)."""

    mib: int


@cellmesh.protein("t.root.HogNow")
class HogNow:
    mib: int


class Hoarder(cellmesh.Cell):
    """Grows past its memory limit on request: the runtime must exit 137 (a memory kill)."""

    @cellmesh.receptor
    async def hog(self, msg: Hog) -> Echo:
        async def grow() -> None:
            self.hoard = bytearray(msg.mib << 20)

        self.nursery.start_soon(grow)
        return Echo(msg.mib)

    @cellmesh.receptor
    async def hog_now(self, msg: HogNow) -> Echo:
        self.hoard = bytearray(msg.mib << 20)  # inside the call itself
        return Echo(msg.mib)


class Stubborn(cellmesh.Cell):
    """Takes a minute to stop: its shutdown timeout must cut that short with SIGKILL."""

    async def on_stop(self) -> None:
        import trio

        await trio.sleep(60)


@cellmesh.protein("t.root.Break")
class Break:
    """Make the cell crash (a task of its nursery raises ValueError(message))."""

    message: str


@cellmesh.protein("t.root.ExitNow")
class ExitNow:
    """Make the cell's process exit at once with ``code`` (``os._exit``)."""

    code: int


class Fragile(cellmesh.Cell):
    """Serves until told to break: then a task of its nursery raises (a crash, exit 1)."""

    @cellmesh.receptor
    async def echo(self, msg: Echo) -> Echo:
        return Echo(msg.n)

    @cellmesh.receptor
    async def brk(self, msg: Break) -> Echo:
        async def fail() -> None:
            raise ValueError(msg.message)

        self.nursery.start_soon(fail)
        return Echo(0)

    @cellmesh.receptor
    async def exit_now(self, msg: ExitNow) -> Echo:
        os._exit(msg.code)  # no report, no cleanup


class BadInit(cellmesh.Cell):
    """Fails in its constructor, every time."""

    def __init__(self) -> None:
        super().__init__()
        raise KeyError("in ctor")


class Crasher(cellmesh.Cell):
    """Fails in on_start, every time: a crash loop."""

    async def on_start(self) -> None:
        raise RuntimeError("this cell never starts")


class Watcher(cellmesh.Cell):
    """Monitors cells on request and lists the CellDown reasons it received."""

    async def on_start(self) -> None:
        import trio

        self.downs: list[str] = []
        self.first_down = trio.Event()

    async def on_cell_down(self, down: cellmesh.CellDown) -> None:
        text = f"{down.name}:{down.reason}"
        if down.error_type is not None:  # the crash's exception, as the cell reported it
            text += f"|{down.error_type}|{down.error_message}"
        self.downs.append(text)
        self.first_down.set()

    @cellmesh.receptor
    async def await_down(self, msg: AwaitDown) -> DownList:
        await self.first_down.wait()
        return DownList(downs=list(self.downs))

    @cellmesh.receptor
    async def watch(self, msg: Watch) -> Echo:
        return Echo(await self.monitor(msg.target))

    @cellmesh.receptor
    async def list_downs(self, msg: Downs) -> DownList:
        return DownList(downs=list(self.downs))

    @cellmesh.receptor
    async def forward(self, msg: Forward) -> Echo:
        reply: Echo = await self.call(msg.target, Echo(msg.n))
        return reply

    @cellmesh.receptor
    async def spawn(self, msg: Spawn) -> Identity:
        name = await self.start_child("worker", msg.suffix)
        return Identity(name=name, pid=0)

    @cellmesh.receptor
    async def stop_kid(self, msg: StopKid) -> Echo:
        """Stop child ``<name>.<suffix>``; answer how many synapses this cell still keeps."""
        await self.stop_child(f"{self.name}.{msg.suffix}")
        return Echo(len(self._context()._synapses))


class TrappingWatcher(Watcher):
    """A Watcher that traps exits: a failing linked cell sends it a CellDown."""

    trap_exits = True


class EagerParent(Watcher):
    """Starts its first child in on_start (before it is ready); says how that went."""

    async def on_start(self) -> None:
        await super().on_start()
        try:
            self.first = await self.start_child("worker", "first")
        except Exception as exc:  # (shown by Identity)
            self.first = f"{type(exc).__name__}: {exc}"

    @cellmesh.receptor
    async def who_am_i(self, msg: WhoAmI) -> Identity:
        return Identity(name=self.first, pid=0)


# ---------------------------------------------------------------- attackers (test_attacks.py)


@cellmesh.protein("t.root.MonitorFlood")
class MonitorFlood:
    """Ask the root for ``n`` monitors of ``target``, ``parallel`` requests at a time."""

    target: str
    n: int
    parallel: int = 1


@cellmesh.protein("t.root.LinkTo")
class LinkTo:
    targets: list[str]


@cellmesh.protein("t.root.Flooded")
class Flooded:
    """How many requests the root granted, how many it refused, and its last refusal."""

    ok: int
    refused: int
    error: str


@cellmesh.protein("t.root.Unwatch")
class Unwatch:
    ref: int


@cellmesh.protein("t.root.SpawnFlood")
class SpawnFlood:
    """Ask the root for a child of template ``worker`` per suffix, all at once."""

    suffixes: list[str]


async def _tally(requests: list[Callable[[], Awaitable[object]]]) -> Flooded:
    """Make the root requests one by one; count the granted and the refused ones."""
    ok = refused = 0
    error = ""
    for request in requests:
        try:
            await request()
            ok += 1
        except cellmesh.RemoteCellError as exc:
            refused += 1
            error = str(exc)
    return Flooded(ok=ok, refused=refused, error=error)


class Attacker(Watcher):
    """A hostile cell: floods the root with monitors and links, counts what it gets."""

    @cellmesh.receptor
    async def flood(self, msg: MonitorFlood) -> Flooded:
        import trio

        share, extra = divmod(msg.n, msg.parallel)
        results: list[Flooded] = []

        async def one(n: int) -> None:
            results.append(await _tally([lambda: self.monitor(msg.target)] * n))

        async with trio.open_nursery() as nursery:
            for i in range(msg.parallel):
                nursery.start_soon(one, share + (1 if i < extra else 0))
        errors = [r.error for r in results if r.error]
        return Flooded(
            ok=sum(r.ok for r in results), refused=sum(r.refused for r in results),
            error=errors[0] if errors else "",
        )

    @cellmesh.receptor
    async def link_to(self, msg: LinkTo) -> Flooded:
        return await _tally([lambda t=t: self.link(t) for t in msg.targets])

    @cellmesh.receptor
    async def unwatch(self, msg: Unwatch) -> Echo:
        await self.demonitor(msg.ref)
        return Echo(msg.ref)

    @cellmesh.receptor
    async def spawn_flood(self, msg: SpawnFlood) -> DownList:
        """Every ``start_child`` at once; one line a request: ``ok:<child>`` or
        ``refused:<the root's refusal>``."""
        import trio

        lines: list[str] = []

        async def one(suffix: str) -> None:
            try:
                lines.append(f"ok:{await self.start_child('worker', suffix)}")
            except cellmesh.RemoteCellError as exc:
                lines.append(f"refused:{exc}")

        async with trio.open_nursery() as nursery:
            for suffix in msg.suffixes:
                nursery.start_soon(one, suffix)
        return DownList(downs=lines)


class Sleepy(Watcher):
    """A watcher that never finishes taking a CellDown (it holds its delivery)."""

    async def on_cell_down(self, down: cellmesh.CellDown) -> None:
        import trio

        await trio.sleep_forever()


class SleepyAttacker(Attacker):
    """Floods the root with monitors and never finishes taking a CellDown: every
    delivery to it would hold a connection of the root's open."""

    async def on_cell_down(self, down: cellmesh.CellDown) -> None:
        import trio

        await trio.sleep_forever()


class FailsAgain(cellmesh.Cell):
    """Starts once; every later start fails in on_start (a crash loop that never escalates
    when its supervisor allows many restarts). ``MARK``: a file it leaves on the host."""

    async def on_start(self) -> None:
        import os

        mark = os.environ["MARK"]
        if os.path.exists(mark):
            raise RuntimeError("fails on every restart")
        with open(mark, "w"):
            pass


class TypoOptions(cellmesh.Cell):
    """Its membrane_options misspell a key (a start failure naming it, not a crash)."""

    membrane_options: ClassVar[dict[str, object]] = {"max_frame_sise": 1 << 20}

    @cellmesh.receptor
    async def echo(self, msg: Echo) -> Echo:
        return msg



class SlowStarter(cellmesh.Cell):
    """Takes a minute in on_start (an interrupted ``up`` must not leave it starting)."""

    async def on_start(self) -> None:
        import trio

        await trio.sleep(60)


class CallsTooEarly(cellmesh.Cell):
    """Calls ``echo`` in on_start: the mistake of calling a cell that starts after it."""

    async def on_start(self) -> None:
        await self.call("echo", Echo(1))


#: What :class:`Liar` reports: absurd but finite service times (status_test, test_metrics).
LIE_MSGS: Final = 424_242


class Liar(cellmesh.Cell):
    """Reports its own CellStats every 20 ms on its umbilical: service times of 1e300 us
    (finite, so not refused as NaN would be) and a histogram summing to 1e300 us."""

    async def on_start(self) -> None:
        self.nursery.start_soon(self.lie)

    async def lie(self) -> None:
        import trio

        from cellmesh.actors.control import CellStats

        context = self._context()
        assert context.umbilical is not None
        while True:
            await context.umbilical.signal(CellStats(
                msgs_in=LIE_MSGS, msgs_out=LIE_MSGS, errors=0, rtt_p50_us=1e300,
                rtt_p99_us=1e300, rtt_buckets=(0,) * 17 + (1,), rtt_sum_us=1e300,
                token=context.token,
            ))
            await trio.sleep(0.02)


class GatedStart(Echoer):
    """An Echoer whose start waits until the file ``$GATE`` exists (a child still
    starting when its parent exits)."""

    async def on_start(self) -> None:
        import trio

        while not os.path.exists(os.environ["GATE"]):
            await trio.sleep(0.05)

"""The market demo: traders, an exchange, a replicated ledger; a replica killed, code swapped.

What it shows, end to end, as a user would run it:

1. ``cellmesh up`` starts the exchange and a 3-replica ledger
   (``cellmesh.ledger:Ledger``, each replica in its own bwrap sandbox with
   its own fsynced log);
2. the traders get accounts and starting balances in the ledger;
3. TRADERS concurrent traders send ORDERS limit orders to the exchange, and
   every trade settles in the ledger before its order is answered;
4. meanwhile the ledger's leader is killed (``cellmesh kill ledger/<i>``)
   and the exchange is hot-swapped to new code (``cellmesh swap
   exchange``): its order book moves to the new version, no order fails;
5. the exchange closes (resting orders return their escrow) and the books
   are checked: every trader's cash and shares add up to what was handed out,
   to the cent and the share, and ``cellmesh ledger check`` agrees;
6. ``cellmesh status``, then ``cellmesh down``: no process is left.

Uses a private ``CELL_HOME`` and a copy of the cells (the swap edits the
copy). Exit status 0 means every check above held. ``--orders N`` and
``--traders N`` change the load.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import attrs
import trio

import cellmesh
from cellmesh.ledger import Account, AccountFlags, LedgerClient, Transfer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cells.protocol import (  # noqa: E402
    CASH,
    ESCROW_CASH,
    ESCROW_SHARES,
    MINT_CASH,
    MINT_SHARES,
    SHARES,
    Close,
    GetReport,
    Placed,
    Report,
    Submit,
    cash_account,
    shares_account,
)

START_CASH = 1_000_000_00  # cents per trader
START_SHARES = 10_000


def cli(*args: str, env: dict[str, str], check: bool = True,
        quiet: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``cellmesh ARGS`` and echo its output."""
    if not quiet:
        print(f"$ cellmesh {' '.join(args)}", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "cellmesh", *args], env=env, text=True, capture_output=True,
        check=False,
    )
    if not quiet:
        sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    sys.stdout.flush()
    if check and done.returncode != 0:
        raise SystemExit(f"cellmesh {args[0]} failed with exit code {done.returncode}")
    return done


@attrs.define
class Market:
    env: dict[str, str]
    work: Path
    traders: int
    orders: int
    sent: int = 0
    placed: list[Placed] = attrs.Factory(list)
    failed: list[str] = attrs.Factory(list)
    events: list[str] = attrs.Factory(list)
    stop_at: int | None = None  # set once the nemesis is done
    swapped_at: int = 0  # orders the exchange had taken when version 2 took over

    @property
    def sockets(self) -> Path:
        return Path(self.env["CELL_HOME"]) / "run"

    async def open_accounts(self) -> None:
        async with cellmesh.Synapse.grow("ledger", socket_dir=self.sockets) as syn:
            ledger = LedgerClient.over(syn)
            floor = AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
            accounts = [
                Account(id=MINT_CASH, ledger=CASH, code=1),
                Account(id=MINT_SHARES, ledger=SHARES, code=1),
                Account(id=ESCROW_CASH, ledger=CASH, code=2, flags=floor),
                Account(id=ESCROW_SHARES, ledger=SHARES, code=2, flags=floor),
            ]
            for t in range(self.traders):
                accounts.append(Account(id=cash_account(t), ledger=CASH, code=3, flags=floor))
                accounts.append(Account(id=shares_account(t), ledger=SHARES, code=3, flags=floor))
            made = await ledger.create_accounts(accounts)
            assert made.ok, made.failures()
            funding = []
            for t in range(self.traders):
                funding.append(Transfer(id=1 + 2 * t, debit_account_id=MINT_CASH,
                                        credit_account_id=cash_account(t), amount=START_CASH,
                                        ledger=CASH, code=1))
                funding.append(Transfer(id=2 + 2 * t, debit_account_id=MINT_SHARES,
                                        credit_account_id=shares_account(t),
                                        amount=START_SHARES, ledger=SHARES, code=1))
            funded = await ledger.create_transfers(funding)
            assert funded.ok, funded.failures()
        print(f"ledger: {len(accounts)} accounts, each of {self.traders} traders funded with "
              f"{START_CASH / 100:,.2f} and {START_SHARES:,} shares\n", flush=True)

    async def trade(self) -> float:
        """The traders send orders until ``orders`` were sent, the nemesis is done,
        and a fifth as many more went to the new version; returns the seconds it took."""
        start = time.perf_counter()
        async with cellmesh.Synapse.grow("exchange", socket_dir=self.sockets) as exchange:

            async def trader(t: int) -> None:
                rng = random.Random(t)
                while self.stop_at is None or self.sent < self.stop_at:
                    side = rng.choice(("buy", "sell"))
                    price = 10_000 + rng.randint(-50, 50) + (10 if side == "buy" else -10)
                    order = Submit(trader=t, side=side, price=price, qty=rng.randint(1, 20))
                    self.sent += 1
                    try:
                        self.placed.append(await exchange.fire(order))
                    except cellmesh.CellmeshError as exc:
                        self.failed.append(f"{type(exc).__name__}: {exc}")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.nemesis)
                for t in range(self.traders):
                    nursery.start_soon(trader, t)
        return time.perf_counter() - start

    async def nemesis(self) -> None:
        """Kill the ledger's leader at 20% of the orders; then swap the exchange (at 50%)."""
        while self.sent < self.orders * 0.2:
            await trio.sleep(0.01)
        leader = None
        while leader is None:
            status = json.loads((await self.run_cli("status", "--json", quiet=True)).stdout)
            leader = next((c["name"] for c in status["cells"]
                           if c["replica"] and c["replica"]["role"] == "leader"), None)
        at = self.sent
        await self.run_cli("kill", leader)
        self.events.append(f"killed the ledger's leader, {leader}, at order {at}")
        while self.sent < self.orders * 0.5:
            await trio.sleep(0.01)
        code = self.work / "cells" / "exchange.py"
        code.write_text(code.read_text().replace('VERSION = "1"', 'VERSION = "2"'))
        at = self.sent
        await self.run_cli("swap", "exchange")
        async with cellmesh.Synapse.grow("exchange", socket_dir=self.sockets) as exchange:
            self.swapped_at = (await exchange.fire(GetReport())).orders
        self.events.append(f"swapped the exchange to version 2 between orders {at} and "
                           f"{self.sent}")
        self.stop_at = max(self.orders, self.sent + self.orders // 5)

    async def run_cli(self, *args: str, quiet: bool = False) -> subprocess.CompletedProcess[str]:
        return await trio.to_thread.run_sync(lambda: cli(*args, env=self.env, quiet=quiet))

    async def close_and_audit(self) -> tuple[Report, list[str]]:
        """Close the market, then check every balance against what was handed out."""
        async with cellmesh.Synapse.grow("exchange", socket_dir=self.sockets) as exchange:
            report = await exchange.fire(Close())
            assert report == await exchange.fire(GetReport())
        problems = []
        async with cellmesh.Synapse.grow("ledger", socket_dir=self.sockets) as syn:
            ledger = LedgerClient.over(syn)
            ids = [cash_account(t) for t in range(self.traders)]
            ids += [shares_account(t) for t in range(self.traders)]
            found = {a.id: a for a in await ledger.lookup_accounts([*ids, ESCROW_CASH,
                                                                     ESCROW_SHARES])}

        def held(account_id: int) -> int:
            a = found[account_id]
            return int(a.credits_posted - a.debits_posted)

        cash = sum(held(cash_account(t)) for t in range(self.traders))
        shares = sum(held(shares_account(t)) for t in range(self.traders))
        if cash != self.traders * START_CASH:
            problems.append(f"traders hold {cash} cents, not {self.traders * START_CASH}")
        if shares != self.traders * START_SHARES:
            problems.append(f"traders hold {shares} shares, not {self.traders * START_SHARES}")
        for escrow in (ESCROW_CASH, ESCROW_SHARES):
            if held(escrow):
                problems.append(f"escrow account {escrow} still holds {held(escrow)}")
        return report, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=5000,
                        help="at least this many (more while the swap is still running)")
    parser.add_argument("--traders", type=int, default=16)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cellmesh-market-") as tmp:
        work = Path(tmp) / "market"
        shutil.copytree(HERE, work, ignore=shutil.ignore_patterns("__pycache__", "run.py"))
        env = dict(os.environ, CELL_HOME=str(Path(tmp) / "home"))
        for var in ("CELL_SOCKET_DIR", "CELL_UMBILICAL"):
            env.pop(var, None)
        market = Market(env=env, work=work, traders=args.traders, orders=args.orders)
        pids: list[int] = []
        cli("up", "-f", str(work / "cellmesh.toml"), env=env)
        try:
            os.environ["CELL_HOME"] = env["CELL_HOME"]
            trio.run(market.open_accounts)
            seconds = trio.run(market.trade)
            report, problems = trio.run(market.close_and_audit)
            fills = sum(len(p.fills) for p in market.placed)
            print(f"\n{len(market.placed)} orders answered in {seconds:.1f} s "
                  f"({len(market.placed) / seconds:,.0f} orders/s), {len(market.failed)} failed; "
                  f"{fills} trades settled ({fills / seconds:,.0f}/s)")
            for event in market.events:
                print(f"  meanwhile: {event}")
            served = report.orders - market.swapped_at
            print(f"  version 2 took over with the order book and served the last {served} "
                  f"orders (at least: counted from when `cellmesh swap` returned)")
            print(f"exchange version {report.version}: {report.orders} orders, "
                  f"{report.rejected} rejected, {report.fills} trades, {report.transfers} "
                  f"ledger transfers in {report.settlement_batches} batches "
                  f"({report.transfers / max(report.settlement_batches, 1):.1f} per batch)")
            print("audit: " + ("every trader's cash and shares add up, escrow is empty"
                               if not problems else "; ".join(problems)) + "\n")
            check = cli("ledger", "check", env=env, check=False)
            cli("status", env=env)
            status = json.loads(cli("status", "--json", env=env, quiet=True).stdout)
            pids = [c["pid"] for c in status["cells"] if c["pid"]]
        finally:
            cli("down", "--timeout", "10", env=env)
        left = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
        print(f"processes of the mesh left after down: {left or 'none'}")
        ok = (
            len(market.placed) == market.sent >= args.orders and not market.failed
            and not problems and report.version == "2" and fills > 0
            and len(market.events) == 2 and report.orders - market.swapped_at > 0
            and check.returncode == 0 and not left
        )
        for failure in market.failed[:5]:
            print(f"  failed: {failure}")
        print("market: OK" if ok else "market: FAILED")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Run the example mesh end to end: up, drive orders, status, kill, down.

Uses a private ``CELL_HOME`` (a temporary directory) so it never touches a
mesh you are running. Exit status 0 means every order got a receipt, the
crashing pricer was restarted by its supervisor, and ``cellmesh down`` left
no process of the mesh behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import trio

import cellmesh

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cells.protocol import Order, Receipt, Summary, SummaryReply  # noqa: E402

ORDERS = 200
WORKERS = 8
ITEMS = ("apple", "pear", "fig")


def cli(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``cellmesh ARGS`` and echo its output."""
    print(f"$ cellmesh {' '.join(args)}", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "cellmesh", *args], env=env, text=True, capture_output=True,
        check=False,
    )
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    if check and done.returncode != 0:
        raise SystemExit(f"cellmesh {args[0]} failed with exit code {done.returncode}")
    return done


async def drive(socket_dir: Path) -> tuple[list[Receipt], SummaryReply]:
    """Send ORDERS orders through the frontend from WORKERS concurrent tasks."""
    receipts: list[Receipt] = []
    async with cellmesh.Synapse.grow("frontend", socket_dir=socket_dir) as frontend:

        async def worker(first: int) -> None:
            for order_id in range(first, ORDERS, WORKERS):
                msg = Order(order_id=order_id, item=ITEMS[order_id % 3], quantity=1 + order_id % 4)
                receipts.append(await frontend.fire(msg))

        async with trio.open_nursery() as nursery:
            for first in range(WORKERS):
                nursery.start_soon(worker, first)
        summary = await frontend.fire(Summary())
    return receipts, summary


def alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if Path(f"/proc/{pid}").exists()]


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="cellmesh-mesh-") as home:
        env = dict(os.environ, CELL_HOME=home)
        env.pop("CELL_SOCKET_DIR", None)
        env.pop("CELL_UMBILICAL", None)
        cli("up", "-f", str(HERE / "cellmesh.toml"), env=env)
        try:
            os.environ["CELL_HOME"] = home
            receipts, summary = trio.run(drive, Path(home) / "run")
            total = max(r.total_cents for r in receipts)
            print(f"\n{len(receipts)} orders, {summary.orders} seen by the frontend, "
                  f"ledger total {total / 100:.2f}")
            print(f"the pricer went down {len(summary.pricer_downs)} times "
                  f"(the frontend monitors it): {sorted(set(summary.pricer_downs))}\n")
            cli("status", env=env)
            status = json.loads(cli("status", "--json", env=env).stdout)
            pids = [c["pid"] for c in status["cells"] if c["pid"]]
            cli("logs", "pricer", "-n", "6", env=env)
            cli("kill", "ledger", env=env)
        finally:
            cli("down", "--timeout", "5", env=env)
        left = alive(pids)
        ok = len(receipts) == ORDERS and summary.pricer_downs and not left
        print(f"processes of the mesh left after down: {left or 'none'}")
        print("mesh: OK" if ok else "mesh: FAILED")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

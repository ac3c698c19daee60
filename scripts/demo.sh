#!/usr/bin/env bash
# Set up (see setup.sh) and run the main job, two demos from examples/:
# 1. examples/mesh: `cellmesh up` starts a root with three sandboxed cells (one
#    crashes every 40 quotes), 200 orders flow through them, `cellmesh status`
#    and `logs` show the mesh, `kill` and `down` stop it.
# 2. examples/market (the seed's market, on cellmesh's APIs): traders send
#    limit orders to an exchange cell whose trades settle in a 3-replica
#    ledger; the ledger's leader is killed and the exchange hot-swapped to new
#    code mid-run; no order fails and the books balance to the cent.
# Nothing is left running after either.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
echo "== examples/mesh: cellmesh up, 200 orders, status, logs, kill, down =="
.venv/bin/python examples/mesh/run.py
echo
echo "== examples/market: an exchange settling in a replicated ledger; kill -9 and hot swap under load =="
.venv/bin/python examples/market/run.py
echo
echo "demo: OK"

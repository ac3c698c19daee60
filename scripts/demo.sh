#!/usr/bin/env bash
# Set up (see setup.sh) and run the main job: the example mesh. `cellmesh up`
# starts a root with three sandboxed cells (one crashes every 40 quotes), 200
# orders flow through them, `cellmesh status` and `cellmesh logs` show the
# mesh, `cellmesh kill` and `cellmesh down` stop it; nothing is left running.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
echo "== examples/mesh: cellmesh up, 200 orders, status, logs, kill, down =="
exec .venv/bin/python examples/mesh/run.py

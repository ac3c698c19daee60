#!/usr/bin/env bash
# Set up (see setup.sh) and run the main job: two cells exchanging proteins,
# then the wire benchmark's summary with its baselines and ratios.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
echo "== examples/ping: a Pong cell and a caller =="
.venv/bin/python examples/ping/run.py
echo
echo "== cellmesh bench wire (summary) =="
exec .venv/bin/cellmesh bench wire --quick

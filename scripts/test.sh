#!/usr/bin/env bash
# Set up (see setup.sh) and run every check CI runs: ruff, mypy --strict, pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
.venv/bin/python -m ruff check cellmesh tests scripts examples
.venv/bin/python -m mypy --strict cellmesh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"

#!/usr/bin/env bash
# Set up (see setup.sh) and run every check CI runs: ruff, mypy --strict, pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
.venv/bin/python -m ruff check cellmesh tests scripts examples
.venv/bin/python -m mypy --strict cellmesh
# Two workers (pytest-xdist), whole files per worker: most tests wait on real
# roots and cells, so two at once take about 0.7 of the time on two cores.
# Arguments come after ours and win: `bash scripts/test.sh -n 0` runs serially.
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile "$@"

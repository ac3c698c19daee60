#!/usr/bin/env bash
# Set up a development environment: .venv with cellmesh installed editable
# (with the test extra), and bubblewrap where we are root and it is missing.
# Idempotent; sourced or run by scripts/demo.sh and scripts/test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "cellmesh needs Python >= 3.11; $PY is $("$PY" --version 2>&1)" >&2
    exit 2
fi
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 \
    | grep -vE '^(WARNING: Location|  |!!)' || true
# bubblewrap is the cell sandbox; the kernel headers let the seccomp test check
# our syscall table against the running architecture's numbers.
missing=""
command -v bwrap >/dev/null 2>&1 || missing="$missing bubblewrap"
[ -f /usr/include/asm/unistd_64.h ] || [ -f /usr/include/x86_64-linux-gnu/asm/unistd_64.h ] \
    || missing="$missing linux-libc-dev"
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing$missing ..."
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing) \
            >/dev/null 2>&1 || echo "could not install$missing; see docs/security.md" >&2
    elif ! command -v bwrap >/dev/null 2>&1; then
        echo "bubblewrap is not installed; cells will run under the host backend (hygiene only)" >&2
    fi
fi

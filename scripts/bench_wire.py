#!/usr/bin/env python3
"""Run ``cellmesh bench wire`` from a checkout: ``scripts/bench_wire.py [--json] [--quick]``."""

from __future__ import annotations

import argparse
import sys

from cellmesh.bench import wire


def main() -> int:
    """Parse ``--json``/``--quick`` and run the wire benchmark."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--quick", action="store_true", help="a shorter run (under a minute)")
    args = parser.parse_args()
    return wire.main(json_output=args.json, quick=args.quick)


if __name__ == "__main__":
    sys.exit(main())

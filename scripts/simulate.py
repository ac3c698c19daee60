#!/usr/bin/env python3
"""Run the deterministic Raft fault simulator.

    python scripts/simulate.py --seed 42                 # replay one seed exactly
    python scripts/simulate.py --seed 42 --trace         # ... and print its event log
    python scripts/simulate.py --seeds 1000              # soak seeds 0..999
    python scripts/simulate.py --seeds 1000 --start 5000
    python scripts/simulate.py --mix harsh --seeds 200   # the harsh fault mix

Exit status 1 if any seed fails; each failure prints its seed and the replay
command. A replay of one seed prints its run summary. ``--mix harsh`` doubles
the fault phase, triples the operations and makes membership changes five
times as likely (:meth:`cellmesh.testing.SimParams.for_seed`).
"""

from __future__ import annotations

import argparse
import sys
import time

from cellmesh.testing.raftsim import MIXES, Simulation, SimulationFailure


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the seeds, report; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--seed", type=int, help="run exactly this seed")
    group.add_argument("--seeds", type=int, help="run this many consecutive seeds")
    parser.add_argument("--start", type=int, default=0, help="first seed of a soak")
    parser.add_argument("--mix", choices=MIXES, default="normal", help="the fault mix")
    parser.add_argument(
        "--trace", action="store_true", help="with --seed: print the run's event log"
    )
    args = parser.parse_args(argv)
    if args.seed is not None:
        seeds = range(args.seed, args.seed + 1)
    else:
        seeds = range(args.start, args.start + args.seeds)
    failures = 0
    began = time.perf_counter()
    for seed in seeds:
        sim = Simulation(seed, trace=args.trace and args.seed is not None, mix=args.mix)
        try:
            result = sim.run()
        except SimulationFailure as exc:
            failures += 1
            if sim.trace:
                print("\n".join(sim.trace))
            print(f"FAIL {exc}", file=sys.stderr, flush=True)
            continue
        if sim.trace:
            print("\n".join(sim.trace))
        if args.seed is not None:
            print(result)
    took = time.perf_counter() - began
    print(f"{len(seeds)} seeds of the {args.mix} mix, {failures} failed, {took:.1f}s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

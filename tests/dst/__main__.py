"""`python -m tests.dst`: run the deterministic simulation for many seeds (`make soak`).

python -m tests.dst --seeds 100000          seeds 0..99999 on every core, progress as it goes
python -m tests.dst --seeds 500 --jobs 1    the same in this process only
python -m tests.dst --seed 4242             one seed, with its trace and findings
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator

from tests.dst.harness import repro, run_world, simulate


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.dst", description=__doc__)
    parser.add_argument("--seeds", type=int, default=2000, help="how many seeds (default 2000)")
    parser.add_argument("--first", type=int, default=0, help="the first seed (default 0)")
    parser.add_argument("--seed", type=int, help="run this one seed and print its trace")
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: cores)"
    )
    args = parser.parse_args()
    if args.seed is not None:
        return _one(args.seed)
    started, failing = time.monotonic(), []
    step = max(1, args.seeds // 20)
    seeds = range(args.first, args.first + args.seeds)
    for n, (seed, violation) in enumerate(_run(seeds, args.jobs), start=1):
        if violation is not None:
            failing.append(seed)
            print(f"seed {seed}: {violation}  (reproduce: {repro(seed)})", flush=True)
        if n % step == 0 or n == args.seeds:
            rate = n / max(time.monotonic() - started, 1e-9)
            print(
                f"[soak] {n}/{args.seeds} seeds, {len(failing)} failing, {rate:.0f}/s", flush=True
            )
    if failing:
        print(f"[soak] failing seeds: {' '.join(map(str, sorted(failing)))}", flush=True)
    return 1 if failing else 0


def _first_violation(seed: int) -> tuple[int, str | None]:
    violations = simulate(seed).violations
    return seed, (violations[0] if violations else None)


def _run(seeds: range, jobs: int) -> Iterator[tuple[int, str | None]]:
    """Each seed is its own world, so seeds split across processes with nothing shared."""
    if jobs <= 1:
        yield from map(_first_violation, seeds)
        return
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        yield from pool.imap_unordered(_first_violation, seeds, chunksize=25)


def _one(seed: int) -> int:
    world = run_world(seed)
    print("\n".join(world.trace))
    problems = world.check()
    for event_id, row in world.db.rows.items():
        print(f"{event_id}: {row.state} sid={row.message_sid} attempts={row.attempts}")
    print("\n".join(problems) or "all invariants hold")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

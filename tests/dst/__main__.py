"""`python -m tests.dst`: run the deterministic simulation for many seeds (`make soak`).

python -m tests.dst --seeds 100000          seeds 0..99999, progress as it goes
python -m tests.dst --seed 4242             one seed, with its trace and findings
"""

from __future__ import annotations

import argparse
import sys
import time

from tests.dst.harness import repro, run_world, simulate


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.dst", description=__doc__)
    parser.add_argument("--seeds", type=int, default=2000, help="how many seeds (default 2000)")
    parser.add_argument("--first", type=int, default=0, help="the first seed (default 0)")
    parser.add_argument("--seed", type=int, help="run this one seed and print its trace")
    args = parser.parse_args()
    if args.seed is not None:
        return _one(args.seed)
    started, failing = time.monotonic(), []
    step = max(1, args.seeds // 20)
    for n, seed in enumerate(range(args.first, args.first + args.seeds), start=1):
        outcome = simulate(seed)
        if outcome.violations:
            failing.append(seed)
            print(f"seed {seed}: {outcome.violations[0]}  (reproduce: {repro(seed)})", flush=True)
        if n % step == 0 or n == args.seeds:
            rate = n / max(time.monotonic() - started, 1e-9)
            print(
                f"[soak] {n}/{args.seeds} seeds, {len(failing)} failing, {rate:.0f}/s", flush=True
            )
    return 1 if failing else 0


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

"""`python -m bench [--quick] [--only PART ...]`: the whole benchmark, then the report.

Writes bench/results/<date>.json (quick runs: <date>-quick.json) and regenerates
BENCHMARKS.md with its plots (quick runs: under bench/results/quick/, BENCHMARKS.md is
left to full runs). Kafka and PostgreSQL come from KAFKA_BOOTSTRAP_SERVERS and
DATABASE_URL, or from the local stack (`make bench` starts it). BENCH_QUICK=1 is --quick.
`--no-report` prints the results instead (a part measured again, the files untouched).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report
from bench.common import progress, simulator_process
from bench.dlq import FULL_SIZES, QUICK_SIZES, dlq_run
from bench.overload import backlog_run, profile_run
from bench.pruning import pruning_run
from bench.suite import Context, consumer_contender, http_contender, naive_contender
from bench.webhooks import callbacks_run
from tests.support import local_stack_env

RESULTS = Path(__file__).parent / "results"
WHOLE_PROCESS_EVENTS = 5_000  # CPU per event as container metrics show it (issue 21)
PARTS = ("points", "faults", "scaling", "backlog", "callbacks", "profile", "dlq", "pruning")
FULL_POINTS = [(8, 50), (32, 50), (128, 50), (8, 200), (32, 200), (128, 200)]
QUICK_POINTS = [(32, 50), (128, 50)]
HEADLINE = (128, 50)  # where the faults, scaling, backlog and profile runs happen


def events_for(concurrency: int, latency_ms: float, seconds: float, quick: bool) -> int:
    """A backlog that takes about `seconds` at the limit (20,000 at the headline point,
    the RSS target's size, in a full run)."""
    if (concurrency, latency_ms) == HEADLINE and not quick:
        return 20_000
    expected = min(2200.0, concurrency * 1000 / latency_ms * 0.9)
    return max(300, min(20_000, int(expected * seconds)))


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else 0.0


def run_point(
    ctx: Context, concurrency: int, latency_ms: float, quick: bool, with_naive: bool
) -> dict[str, Any]:
    ctx.simulator.configure(latency_ms=latency_ms, rate_429=0.0)
    count = events_for(concurrency, latency_ms, ctx.seconds, quick)
    where = f"concurrency {concurrency}, {latency_ms:g} ms"
    progress(f"{where}: (b) plain aiohttp, {count} creates")
    plain = http_contender(ctx, "plain", concurrency, count, None)
    half = plain["events_per_s"] / 2
    progress(f"{where}: (c) SDK only")
    sdk = http_contender(ctx, "sdk", concurrency, count, half)
    contenders = {"plain": plain, "sdk": sdk}
    if with_naive:
        progress(f"{where}: (a) naive, one event at a time")
        contenders["naive"] = naive_contender(ctx, latency_ms)
    progress(f"{where}: (d) sms-relay consumer, {count} events")
    consumer = consumer_contender(ctx, concurrency, count, half)
    contenders["consumer"] = consumer
    # (b) again after the others: the limit is the mean of both, so a load change on the
    # shared cores during the point biases no contender (both rates are kept).
    progress(f"{where}: (b) again")
    again = http_contender(ctx, "plain", concurrency, count, None, latency=False)
    plain["events_per_s_runs"] = [plain["events_per_s"], again["events_per_s"]]
    plain["events_per_s"] = round((plain["events_per_s"] + again["events_per_s"]) / 2, 1)
    ratios = {
        "d_over_b": _ratio(consumer["events_per_s"], plain["events_per_s"]),
        "d_over_c": _ratio(consumer["events_per_s"], sdk["events_per_s"]),
        "cpu_d_over_b": _ratio(consumer["cpu_ms_per_event"], plain["cpu_ms_per_event"]),
    }
    if "naive" in contenders:
        ratios["d_over_a"] = _ratio(consumer["events_per_s"], contenders["naive"]["events_per_s"])
    progress(
        f"{where}: (d) {consumer['events_per_s']}/s = {ratios['d_over_b']}x (b), "
        f"{consumer['cpu_ms_per_event']} ms CPU/event, p99 {consumer['p99_ms']} ms"
    )
    return {
        "concurrency": concurrency,
        "latency_ms": latency_ms,
        "events": count,
        "contenders": contenders,
        "ratios": ratios,
    }


def _headline(results: dict[str, Any]) -> dict[str, Any] | None:
    for point in results["points"]:
        if (point["concurrency"], point["latency_ms"]) == HEADLINE:
            return dict(point)
    return None


def _dlq_part(bootstrap: str, database: str, quick: bool) -> dict[str, Any]:
    sizes = QUICK_SIZES if quick else FULL_SIZES
    progress(f"dlq: peak RSS of dlq list and replay --dry-run at {sizes} records")
    return dlq_run(bootstrap, database, sizes)


def run(args: argparse.Namespace) -> dict[str, Any]:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    database = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if not (bootstrap and database):
        env = local_stack_env()
        bootstrap, database = env["KAFKA_BOOTSTRAP_SERVERS"], env["TEST_DATABASE_URL"]
    parts = args.only or list(PARTS)
    quick = args.quick
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full",
        "machine": {"cpus": os.cpu_count(), "loadavg_before": os.getloadavg()[0]},
        "points": [],
    }
    account_sid, auth_token = "AC" + uuid.uuid4().hex, uuid.uuid4().hex
    started = time.monotonic()
    with (
        simulator_process(account_sid, auth_token) as simulator,
        tempfile.TemporaryDirectory(prefix="sms-relay-bench-") as logs,
    ):
        ctx = Context(
            bootstrap=bootstrap,
            database=database,
            simulator=simulator,
            account_sid=account_sid,
            auth_token=auth_token,
            logs=Path(logs),
            seconds=3.0 if quick else 12.0,
            latency_seconds=3.0 if quick else 6.0,
        )
        if "points" in parts:
            for concurrency, latency in QUICK_POINTS if quick else FULL_POINTS:
                with_naive = not quick or (concurrency, latency) == HEADLINE
                point = run_point(ctx, concurrency, latency, quick, with_naive)
                results["points"].append(point)
        headline = _headline(results)
        half = headline["contenders"]["plain"]["events_per_s"] / 2 if headline else None
        count = events_for(*HEADLINE, ctx.seconds, quick)
        if "faults" in parts and not quick:
            # Between two fault-free runs of the same size: the machine drifts by more
            # than the 5% the target allows between runs minutes apart.
            progress("faults: (d) fault-free, with 1% of creates answered 429, fault-free")
            runs = []
            for rate_429 in (0.0, 0.01, 0.0):
                simulator.configure(latency_ms=HEADLINE[1], rate_429=rate_429)
                runs.append(consumer_contender(ctx, HEADLINE[0], count, half, label="faults"))
            simulator.configure(rate_429=0.0)
            clean = (runs[0]["events_per_s"] + runs[2]["events_per_s"]) / 2
            middle = (runs[0]["middle_events_per_s"] + runs[2]["middle_events_per_s"]) / 2
            results["faults"] = {
                "rate_429": 0.01,
                "consumer": runs[1],
                "fault_free": [runs[0]["events_per_s"], runs[2]["events_per_s"]],
                "vs_fault_free": _ratio(runs[1]["events_per_s"], clean),
                "middle_vs_fault_free": _ratio(runs[1]["middle_events_per_s"], middle),
            }
        if "scaling" in parts and not quick:
            progress("scaling: (d) with two consumer processes")
            simulator.configure(latency_ms=HEADLINE[1], rate_429=0.0)
            two = consumer_contender(ctx, HEADLINE[0], count, half, processes=2, label="two")
            one = headline["contenders"]["consumer"]["events_per_s"] if headline else 0.0
            results["scaling"] = {"two": two, "two_over_one": _ratio(two["events_per_s"], one)}
        if "backlog" in parts and not quick:
            results |= _backlog_parts(ctx, args.backlog)
        if "callbacks" in parts:
            results["callbacks"] = callbacks_run(ctx)
            cb = results["callbacks"]
            progress(
                f"callbacks: {cb['ratio']}x (e) the minimal correct handler "
                f"({cb['ratio_bare']}x the bare one); two processes {cb['two_over_one']}x one"
            )
        if "profile" in parts and not quick:
            progress("profile: the consumer under py-spy, concurrency 128, 50 ms")
            simulator.configure(latency_ms=HEADLINE[1], rate_429=0.0)
            results["profile"] = profile_run(ctx, count, HEADLINE[0])
    results |= _data_parts(parts, bootstrap, database, quick)
    results["machine"]["loadavg_after"] = os.getloadavg()[0]
    results["seconds"] = round(time.monotonic() - started)
    return results


def _backlog_parts(ctx: Context, events: int) -> dict[str, Any]:
    """A long drain (RSS and rate over time) and a short one (the whole process's CPU)."""
    progress(f"backlog: {events} events queued before the consumer starts")
    ctx.simulator.configure(latency_ms=HEADLINE[1], rate_429=0.0)
    backlog = backlog_run(ctx, events, HEADLINE[0])
    progress(f"whole process: {WHOLE_PROCESS_EVENTS} events, start-up included")
    whole = backlog_run(ctx, WHOLE_PROCESS_EVENTS, HEADLINE[0])
    return {"backlog": backlog, "whole_process": whole}


def _data_parts(parts: list[str], bootstrap: str, database: str, quick: bool) -> dict[str, Any]:
    """The parts that need no simulator: the DLQ tools and pruning."""
    results: dict[str, Any] = {}
    if "dlq" in parts:
        results["dlq"] = _dlq_part(bootstrap, database, quick)
    if "pruning" in parts:
        results["pruning"] = pruning_run(database, 100_000 if quick else 1_000_000)
    return results


def merged(earlier: dict[str, Any], later: dict[str, Any], parts: list[str]) -> dict[str, Any]:
    """The day's earlier run with the parts just run put in its place (`--only`), so a
    part can be measured again without running the rest; the report says which."""
    result = earlier | {part: later[part] for part in parts if part in later}
    rerun = dict(earlier.get("rerun", {}))
    rerun.update(dict.fromkeys(parts, later["started"]))
    return result | {"rerun": rerun}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", default=bool(os.environ.get("BENCH_QUICK")))
    parser.add_argument("--only", nargs="+", choices=PARTS, help="run only these parts")
    parser.add_argument("--backlog", type=int, default=200_000, help="events of the backlog run")
    parser.add_argument(
        "--no-report",
        action="store_true",
        help="print the results as JSON on stdout; write no results file and no report",
    )
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    name = datetime.now(UTC).strftime("%Y-%m-%d") + ("-quick" if args.quick else "")
    path = RESULTS / f"{name}.json"
    results = run(args)
    if args.no_report:
        print(json.dumps(results, indent=1))
        return
    if args.only and path.exists():
        results = merged(json.loads(path.read_text()), results, args.only)
    path.write_text(json.dumps(results, indent=1) + "\n")
    progress(f"results in {path} ({results['seconds']} s)")
    target = report.QUICK_DIR if args.quick else report.ROOT
    written = report.render(results, path, target)
    progress(f"report in {written}")


if __name__ == "__main__":
    main()

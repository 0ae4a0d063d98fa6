"""The consumer under a large backlog (RSS over time) and under py-spy (where CPU goes)."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import cpu_seconds, progress, rss_mib
from bench.suite import (
    Backlog,
    Context,
    Ledger,
    consumer_processes,
    consumer_settings,
    fresh_stack,
    python_pids,
)

SIMULATOR_RESET_SECONDS = 10.0  # keeps the simulator's in-memory log small


def backlog_run(ctx: Context, events: int, concurrency: int = 128) -> dict[str, Any]:
    """`events` queued before the consumer starts; RSS and progress sampled every second."""
    run = uuid.uuid4().hex[:8]
    with fresh_stack(ctx) as (kafka, url):
        backlog, ledger = Backlog(kafka, run), Ledger(url)
        started = time.monotonic()
        backlog.bulk(0, events)
        produced_s = time.monotonic() - started
        progress(f"  {events} events produced in {produced_s:.1f}s")
        settings = consumer_settings(ctx, kafka, url, concurrency)
        series: list[list[float]] = []
        ctx.simulator.reset()
        with consumer_processes(ctx, settings, 1, "backlog") as procs:
            pid = procs[0].pid
            started = last_reset = time.monotonic()
            while True:
                _accepted, reported = ledger.counts()
                now = time.monotonic()
                cpu = cpu_seconds(pid)  # the whole process since it started
                series.append(
                    [round(now - started, 1), round(rss_mib(pid), 1), reported, round(cpu, 2)]
                )
                if len(series) % 15 == 0:
                    progress(f"  backlog: {reported}/{events}, RSS {series[-1][1]} MiB")
                if reported >= events:
                    break
                if now - started > 1200:
                    raise RuntimeError(f"backlog: {reported}/{events} after 1200s")
                if now - last_reset > SIMULATOR_RESET_SECONDS:
                    ctx.simulator.reset()
                    last_reset = now
                time.sleep(1.0)
            peak = rss_mib(pid, "VmHWM")
            whole_cpu = cpu_seconds(pid)
        ledger.close()
    first = next(s for s in series if s[2] > 0)
    return {
        # As an operator's container metrics see it: start-up, joining, draining.
        "process_cpu_s": round(whole_cpu, 2),
        "process_cpu_ms_per_event": round(whole_cpu * 1000 / events, 3),
        "rate_by_tenth": _rate_by_tenth(series),
        "cpu_ms_per_event_by_tenth": _cpu_by_tenth(series),
        "events": events,
        "concurrency": concurrency,
        "produce_seconds": round(produced_s, 1),
        "seconds": series[-1][0],
        # From the first settled event to the last: joining the group left out.
        "events_per_s": round((events - first[2]) / max(1e-9, series[-1][0] - first[0]), 1),
        "peak_rss_mib": round(peak, 1),
        "rss_first_quarter_mib": _max_rss(series, 0.0, 0.25),
        "rss_last_quarter_mib": _max_rss(series, 0.75, 1.0),
        "series": series,
    }


def _by_tenth(
    series: list[list[float]], per: Callable[[list[float], list[float]], float]
) -> list[float]:
    """`per(first, last)` over each tenth of the drain, from the first settled event."""
    active = [s for s in series if s[2] > 0]
    if len(active) < 11:
        return []
    tenths = []
    for n in range(10):
        a = active[len(active) * n // 10]
        b = active[min(len(active) - 1, len(active) * (n + 1) // 10)]
        tenths.append(round(per(a, b), 3))
    return tenths


def _rate_by_tenth(series: list[list[float]]) -> list[float]:
    """Events settled per second in each tenth: a rate that falls as the ledger grows
    shows here."""
    return _by_tenth(series, lambda a, b: (b[2] - a[2]) / max(1e-9, b[0] - a[0]))


def _cpu_by_tenth(series: list[list[float]]) -> list[float]:
    """The consumer's CPU (ms) per settled event in each tenth: flat while the rate falls
    means something outside the process binds; rising means its own work."""
    return _by_tenth(series, lambda a, b: (b[3] - a[3]) * 1000 / max(1, b[2] - a[2]))


def _max_rss(series: list[list[float]], start: float, end: float) -> float:
    chunk = series[int(len(series) * start) : max(1, int(len(series) * end))]
    return max((s[1] for s in chunk), default=0.0)


def profile_run(ctx: Context, events: int, concurrency: int = 128) -> dict[str, Any]:
    """py-spy (a sampling profiler in its own process) on the consumer draining a backlog."""
    run = uuid.uuid4().hex[:8]
    raw = ctx.logs / "consumer-profile.txt"  # collapsed stacks, kept with --keep-logs
    with fresh_stack(ctx) as (kafka, url):
        backlog, ledger = Backlog(kafka, run), Ledger(url)
        backlog.bulk(0, events)
        settings = consumer_settings(ctx, kafka, url, concurrency)
        ctx.simulator.reset()
        with consumer_processes(ctx, settings, 1, "profile", profile=raw) as procs:
            time.sleep(1.0)
            if not python_pids(procs):
                raise RuntimeError("py-spy did not start the consumer")
            ledger.wait(events, "profile", 600)
        ledger.close()
    return {"events": events, "concurrency": concurrency, **summarize_profile(raw)}


def summarize_profile(raw: Path, top: int = 25) -> dict[str, Any]:
    """Collapsed stacks (`frame;frame;... count`) to the functions with the most samples,
    inclusive (anywhere on the stack) and self (on top), and self time per package."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if "(" in f]
        if not frames or any(f.startswith("_find_and_load") for f in frames):
            continue  # start-up imports
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
        packages[_package(frames[-1])] += count
    share = 100 / max(1, total)
    # The trunk (runpy, the CLI, the event loop's run) is on every stack: leave it out.
    branches = [(f, n) for f, n in inclusive.most_common() if n < 0.9 * total]
    areas: Counter[str] = Counter(dict.fromkeys(AREAS, 0))
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if "_find_and_load" in stack:
            continue
        for area, needles in AREAS.items():
            if count_text.isdigit() and any(needle in stack for needle in needles):
                areas[area] += int(count_text)
    return {
        "samples": total,
        "areas": [[a, round(areas[a] * share, 1)] for a in AREAS],
        "inclusive": [[f, round(n * share, 1)] for f, n in branches[:top]],
        "self": [[f, round(n * share, 1)] for f, n in own.most_common(top)],
        "packages": [[p, round(n * share, 1)] for p, n in packages.most_common(15)],
    }


# Where a sample's CPU went, by the frames on its stack (an area may overlap another).
AREAS = {
    "send: SendAttempts._send (delivery/attempts.py: slot, limiter, metrics, the request)": (
        "SendAttempts._send (",
    ),
    "  of which TwilioSmsSender.send (adapters/twilio/sms_sender.py)": ("TwilioSmsSender.send",),
    "  of which aiohttp's request": ("ClientSession._request",),
    "decode: parse + validate (consumer/batch.py, records.py)": ("decode (consumer/batch.py",),
    "  of which phonenumbers (schemas/events.py validator)": ("phonenumbers/",),
    "ledger round trips (adapters/postgres/deliveries, SQLAlchemy, psycopg)": ("PostgresLedger.",),
    "effects: status records, produce (consumer/effects.py)": ("Effects.",),
    "logging (sms_relay/logs.py)": ("Logger.", "RedactingJsonFormatter"),
    "metrics (prometheus_client)": ("prometheus_client/",),
    "polling thread: consume, commit (consumer/loop.py)": ("ConsumeLoop._commit_and_poll",),
    "producer thread: delivery reports (adapters/kafka/producer.py)": ("AsyncProducer._serve",),
}


def _package(frame: str) -> str:
    """`func (path)` to the package, or our module, it lives in."""
    path = frame.rsplit("(", 1)[-1].rstrip(")")
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    top = path.split("/", 1)[0]
    if top in ("sms_relay", "consumer", "schemas", "callbacks"):
        return path.removesuffix(".py")
    return top.removesuffix(".py")

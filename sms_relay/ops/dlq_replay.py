"""`sms-relay dlq replay`: send dead-lettered records back through the normal path.

A replay produces the record to the main topic again, so the consumer's dedupe,
suppression and consent checks all apply. For a delivery the ledger holds as
`dead_lettered`, the replay first sets it back to `retry_scheduled` with an expired lease
(the only transition this command makes), in the same transaction as its audit rows and
the run's new positions. The records are produced before that transaction commits: a
failed produce changes nothing, and a failed commit leaves records the ledger still holds
as `dead_lettered`, which the consumer skips as duplicates (replay them again).

Each replay is a run (`dlq_replay_runs`): the end offsets it reads to, and per partition
how far it got, advanced with every chunk it replays. Ctrl-C ends it after the chunk in
flight; `--resume RUN` goes on from there, with the run's own filters and end offsets.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from sms_relay.adapters.kafka.clients import create_producer
from sms_relay.adapters.postgres import dlq_replay_runs
from sms_relay.adapters.postgres.engine import AsyncEngine
from sms_relay.errors import OpsError, SmsRelayError
from sms_relay.ops.common import KAFKA_LOGGER, iso, parse_time, run_with_engine
from sms_relay.ops.dlq import (
    Span,
    buffer_for,
    configure_filters,
    filters_of,
    span_now,
    topics_of,
)
from sms_relay.ops.dlq_output import JsonStream, TableStream
from sms_relay.ops.dlq_pages import ScanProgress
from sms_relay.ops.dlq_reader import TopicScan
from sms_relay.ops.dlq_replayer import Plan, Replayer, Tally
from sms_relay.settings import Settings

# The filter flags a resumed run takes from its row instead.
_RUN_OPTIONS = ("reason", "event_ids", "error_code", "since", "until", "limit")


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in a bare container
        return "unknown"


def configure_replay(parser: argparse.ArgumentParser) -> None:
    configure_filters(parser)
    parser.add_argument("--dry-run", action="store_true", help="show what would be replayed")
    parser.add_argument(
        "--operator", default=_operator(), help="who replays, for the audit row (default: $USER)"
    )
    parser.add_argument(
        "--include-invalid",
        action="store_true",
        help="also replay invalid_json / schema_violation records as they are "
        "(they are rejected again unless upstream fixed them)",
    )
    parser.add_argument(
        "--again", action="store_true", help="also replay records that were replayed before"
    )
    parser.add_argument(
        "--resume",
        type=int,
        metavar="RUN",
        help="go on with an interrupted run where it stopped, with its filters and end offsets",
    )


class Interrupt:
    """The first Ctrl-C asks the run to stop after the chunk in flight; a second one
    stops at once (what the chunk in flight did rolls back; the ledger still dedupes)."""

    def __init__(self) -> None:
        self.asked = False

    def __call__(self) -> bool:
        return self.asked

    def _on_signal(self, _number: int, _frame: FrameType | None) -> None:
        if self.asked:
            raise KeyboardInterrupt
        self.asked = True
        sys.stderr.write("\ndlq replay: stopping after the chunk in flight (Ctrl-C again: now)\n")

    @contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach the main thread only (an in-process caller)
            return
        previous = signal.signal(signal.SIGINT, self._on_signal)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


def _plan_of(args: argparse.Namespace, settings: Settings) -> Plan:
    filters = filters_of(args.reason, args.event_ids, args.error_code, args.since, args.until)
    dlq_topic, target = topics_of(args.kind, settings)
    options = {
        "kind": args.kind,
        "reason": args.reason,
        "eventIds": args.event_ids,
        "errorCode": args.error_code,
        "since": iso(args.since),
        "until": iso(args.until),
        "limit": args.limit,
        "includeInvalid": args.include_invalid,
        "again": args.again,
    }
    return Plan(dlq_topic, target, filters, args.limit, args.include_invalid, args.again, options)


def _plan_of_run(run: dlq_replay_runs.Run) -> Plan:
    o = run.options
    since = parse_time(o["since"]) if o.get("since") else None
    until = parse_time(o["until"]) if o.get("until") else None
    filters = filters_of(o.get("reason"), o.get("eventIds"), o.get("errorCode"), since, until)
    include_invalid, again = bool(o.get("includeInvalid")), bool(o.get("again"))
    return Plan(run.dlq_topic, run.target_topic, filters, o.get("limit"), include_invalid, again, o)


async def _resumable(engine: AsyncEngine, run_id: int, operator: str) -> dlq_replay_runs.Run:
    """Raises OpsError unless `run_id` is a run that did not finish."""
    run = await dlq_replay_runs.load(engine, run_id)
    if run is None:
        raise OpsError(f"there is no replay run {run_id}")
    if run.finished_at is not None or not await dlq_replay_runs.reopen(engine, run_id, operator):
        raise OpsError(f"replay run {run_id} finished at {iso(run.finished_at)}: nothing to resume")
    return run


def _refuse_filters_with_resume(args: argparse.Namespace) -> None:
    given = [f"--{name.replace('_', '-')}" for name in _RUN_OPTIONS if getattr(args, name)]
    given += ["--include-invalid"] if args.include_invalid else []
    given += ["--again"] if args.again else []
    given += ["--dry-run"] if args.dry_run else []
    if given:
        raise OpsError(f"--resume replays with the run's own options: drop {', '.join(given)}")


def handle_replay(args: argparse.Namespace, settings: Settings) -> int:
    if not args.operator:
        raise OpsError("--operator must not be empty")
    if args.resume is not None:
        _refuse_filters_with_resume(args)
    plan = None if args.resume is not None else _plan_of(args, settings)
    interrupt = Interrupt()
    out: JsonStream | TableStream | None = None
    if args.json:
        out = JsonStream("records")
    elif args.dry_run:
        out = TableStream()

    async def work(engine: AsyncEngine) -> tuple[Plan, Tally]:
        nonlocal plan
        run = None
        if args.resume is not None:
            run = await _resumable(engine, args.resume, args.operator)
            plan = _plan_of_run(run)
        assert plan is not None
        with TopicScan(settings.kafka, plan.dlq_topic, buffer=buffer_for(args.page_size)) as scan:
            span = (
                Span(run.positions, run.end_offsets) if run else span_now(scan, plan.filters.since)
            )
            tally = Tally(run_id=run.id if run else None)
            if run is not None:
                tally.matched, tally.replayed_before = run.matched, run.replayed
            elif not args.dry_run:
                tally.run_id = await dlq_replay_runs.start(
                    engine,
                    plan.dlq_topic,
                    plan.target,
                    args.operator,
                    plan.options,
                    span.ends,
                    span.starts,
                )
            if tally.run_id is not None:
                print(f"dlq replay: run {tally.run_id}", file=sys.stderr)
            await _replay(engine, scan, span, plan, tally, args, settings, interrupt, out)
        return plan, tally

    with interrupt.installed():
        plan, tally = run_with_engine(settings, work)
    _report(plan, tally, args, out)
    return 130 if tally.interrupted else 0


async def _replay(
    engine: AsyncEngine,
    scan: TopicScan,
    span: Span,
    plan: Plan,
    tally: Tally,
    args: argparse.Namespace,
    settings: Settings,
    interrupt: Interrupt,
    out: JsonStream | TableStream | None,
) -> None:
    """The run, its producer and its progress line; the run row says how it ended."""
    producer = None if args.dry_run else create_producer(settings.kafka, logger=KAFKA_LOGGER)
    write = out.write if out is not None else (lambda _records: None)
    replayer = Replayer(engine, plan, tally, producer, args.operator, write, dict(span.starts))
    progress = ScanProgress(span.total)
    try:
        await replayer.run(scan, span.ends, progress, interrupt, args.page_size)
    except BaseException:
        if tally.run_id is not None:
            with contextlib.suppress(SmsRelayError):
                await dlq_replay_runs.finish(engine, tally.run_id, "failed")
        raise
    finally:
        progress.finish()
    if tally.run_id is not None:
        outcome = "interrupted" if tally.interrupted else "finished"
        await dlq_replay_runs.finish(engine, tally.run_id, outcome)


def _report(
    plan: Plan, tally: Tally, args: argparse.Namespace, out: JsonStream | TableStream | None
) -> None:
    if isinstance(out, JsonStream):
        out.close(
            {
                "dryRun": bool(args.dry_run),
                "run": tally.run_id,
                "interrupted": tally.interrupted,
                "topic": plan.target,
                "replayed": tally.replayed,
                "wouldReplay": tally.would_replay,
                "deliveriesReset": tally.reset,
                "skippedInvalid": tally.invalid_skipped,
                "skippedAlreadyReplayed": tally.replayed_skipped,
            }
        )
    elif isinstance(out, TableStream) and tally.would_replay:
        out.close()
    if not isinstance(out, JsonStream):
        print(_summary(plan, tally, bool(args.dry_run)))
    if tally.interrupted:
        print(
            f"dlq replay: interrupted; resume with `sms-relay dlq replay --resume {tally.run_id}`"
            if tally.run_id is not None
            else "dlq replay: interrupted",
            file=sys.stderr,
        )


def _summary(plan: Plan, tally: Tally, dry_run: bool) -> str:
    source, target = plan.dlq_topic, plan.target
    lines = []
    if dry_run:
        lines.append(
            f"dry run: would replay {tally.would_replay} record(s) from {source} to {target}"
        )
    else:
        lines.append(
            f"replayed {tally.replayed} record(s) from {source} to {target} "
            f"({tally.reset} dead-lettered deliveries set back to retry_scheduled)"
        )
        if tally.replayed_before:
            total = tally.replayed_before + tally.replayed
            lines.append(f"run {tally.run_id} has replayed {total} record(s) in all")
    if tally.invalid_skipped:
        lines.append(
            f"skipped {tally.invalid_skipped} invalid record(s) (invalid_json / "
            "schema_violation); --include-invalid replays them as they are"
        )
    if tally.replayed_skipped:
        lines.append(
            f"skipped {tally.replayed_skipped} record(s) replayed before; --again "
            "replays them anyway (the ledger still sends each event at most once)"
        )
    if tally.invalid_replayed:
        lines.append(
            f"note: {tally.invalid_replayed} invalid record(s) "
            f"{'would be' if dry_run else 'were'} replayed as they are: they will be "
            "rejected again unless upstream fixed them"
        )
    return "\n".join(lines)

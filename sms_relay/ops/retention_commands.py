"""`sms-relay prune` and `sms-relay forget`: retention on demand, and erasure of a number."""

from __future__ import annotations

import argparse
import getpass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas.phone import check_e164
from sms_relay.adapters.postgres.engine import AsyncEngine
from sms_relay.adapters.postgres.erasures import PostgresErasures
from sms_relay.adapters.postgres.retention_tables import prunable_tables
from sms_relay.errors import OpsError
from sms_relay.ops.common import emit, run_with_engine, table
from sms_relay.retention.erasure import IN_FLIGHT_STEP, TWILIO_STEP, Eraser, kafka_step
from sms_relay.retention.pruning import KEPT_FOREVER, PRUNABLE_STATES, Pruner, retention_periods
from sms_relay.settings import Settings


def configure_prune(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dry-run", action="store_true", help="count what would go, delete nothing"
    )


def configure_forget(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("phone", nargs="?", help="the number in E.164 format, e.g. +12125550123")
    parser.add_argument(
        "--file", type=Path, help="a file with one E.164 number a line (# starts a comment)"
    )
    parser.add_argument(
        "--operator", default=None, help="who asked, for the audit row (default: the OS user)"
    )


def handle_prune(args: argparse.Namespace, settings: Settings) -> int:
    dry_run: bool = args.dry_run

    async def work(engine: AsyncEngine) -> dict[str, int]:
        tables = prunable_tables(engine, sorted(PRUNABLE_STATES))
        pruner = Pruner.for_tables(settings, tables, lambda: datetime.now(UTC))
        return await (pruner.count() if dry_run else pruner.prune())

    counts = run_with_engine(settings, work)
    periods = retention_periods(settings)
    rows = [
        [name, _days(periods[name].total_seconds()), str(counts.get(name, 0))] for name in periods
    ] + [[name, "forever", "-"] for name in KEPT_FOREVER]
    verb = "would remove" if dry_run else "removed"
    emit(
        args,
        {"dryRun": dry_run, "tables": {name: counts.get(name, 0) for name in periods}},
        lambda: table(rows, ["table", "kept", verb]) + f"\n{sum(counts.values())} row(s) {verb}",
    )
    return 0


def _days(seconds: float) -> str:
    if seconds == 0:
        return "until expiry"
    days = seconds / 86400
    return f"{days:g} days" if days >= 1 else f"{seconds / 3600:g} hours"


def numbers_of(args: argparse.Namespace) -> list[str]:
    """The numbers asked for, each checked; never echoes one in an error."""
    if (args.phone is None) == (args.file is None):
        raise OpsError("give one number or --file PATH (one number a line)")
    if args.phone is not None:
        lines = [(1, args.phone)]
    else:
        try:
            text = args.file.read_text()
        except OSError as error:
            raise OpsError(f"cannot read {args.file}: {error.strerror}") from None
        lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)]
        lines = [(n, line) for n, line in lines if line and not line.startswith("#")]
    for number, line in lines:
        try:
            check_e164(line)
        except ValueError:
            where = f"line {number} of {args.file}" if args.file else "the number"
            raise OpsError(f"{where} is not an E.164 number like +12125550123") from None
    return list(dict.fromkeys(line for _, line in lines))


def handle_forget(args: argparse.Namespace, settings: Settings) -> int:
    numbers = numbers_of(args)
    operator: str = args.operator or getpass.getuser()

    async def work(engine: AsyncEngine) -> list[dict[str, Any]]:
        eraser = Eraser(PostgresErasures(engine), settings.phone_hash_key.get_secret_value())
        return [
            {
                "to": e.masked,
                "removed": e.removed,
                "messageSids": e.message_sids,
                "inFlight": e.in_flight,
            }
            for e in await eraser.forget_all(numbers, operator)
        ]

    erased = run_with_engine(settings, work)
    not_reached = {"kafka": kafka_step(settings), "twilio": TWILIO_STEP}
    in_flight_step = IN_FLIGHT_STEP if any(e["inFlight"] for e in erased) else None
    emit(
        args,
        {
            "erased": erased,
            "suppressionsKept": True,
            "inFlightStep": in_flight_step,
            "notReached": not_reached,
        },
        lambda: _forget_text(erased, in_flight_step, not_reached),
    )
    return 0


def _forget_text(
    erased: list[dict[str, Any]], in_flight_step: str | None, not_reached: dict[str, str]
) -> str:
    lines = []
    for entry in erased:
        removed = {t: n for t, n in entry["removed"].items() if n}
        nothing = "nothing erased yet" if entry["inFlight"] else "nothing found"
        found = ", ".join(f"{t} {n}" for t, n in removed.items()) or nothing
        lines.append(f"{entry['to']}: {found}")
        if entry["messageSids"]:
            lines.append(f"  Twilio messages: {', '.join(entry['messageSids'])}")
        if entry["inFlight"]:
            lines.append(f"  {entry['inFlight']} delivery(ies) in flight, kept")
    if in_flight_step:
        lines.append(f"in flight: {in_flight_step}")
    lines.append("settled deliveries kept as tombstones without the number (they dedupe replays)")
    lines.append("suppressions kept (a STOP outlives erasure); an audit row without the number")
    lines.append("not reached:")
    lines.extend(f"- {step}" for step in not_reached.values())
    return "\n".join(lines)

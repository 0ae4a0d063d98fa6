"""`sms-relay trace`: the whole story of one message, by eventId or Message SID."""

from __future__ import annotations

import argparse
from typing import Any

from sms_relay.adapters.postgres import deliveries, dlq_replays, ingestions, status_history
from sms_relay.adapters.postgres.engine import AsyncEngine
from sms_relay.errors import NotFoundError
from sms_relay.logs import scrub
from sms_relay.ops.common import emit, iso, run_with_engine, table
from sms_relay.settings import Settings


async def load_story(engine: AsyncEngine, ident: str) -> dict[str, Any] | None:
    """The deliveries row, every status step, every DLQ replay of one message, and which
    client sent it over HTTP (key id and client name, never the key)."""
    row = await deliveries.find(engine, ident)
    event_id = row["event_id"] if row else ident
    sid = row["message_sid"] if row else ident
    steps = await status_history.steps_of(engine, event_id, sid)
    replays = await dlq_replays.replays_of(engine, event_id)
    sources = await ingestions.ingestions_of(engine, event_id)
    if row is None and not steps and not sources:
        return None
    if row is None and steps:  # callbacks for a message the ledger never saw
        event_id = next((s["event_id"] for s in steps if s["event_id"]), None)
    return {
        "eventId": event_id,
        "delivery": _delivery(row) if row else None,
        "history": [
            {
                "status": s["status"],
                "errorCode": s["error_code"],
                "source": s["source"],
                "messageSid": s["message_sid"],
                "occurredAt": iso(s["occurred_at"]),
                "recordedAt": iso(s["recorded_at"]),
            }
            for s in steps
        ],
        "replays": [
            {
                "from": f"{r['dlq_topic']}:{r['dlq_partition']}:{r['dlq_offset']}",
                "reason": r["reason"],
                "operator": r["operator"],
                "replayedAt": iso(r["replayed_at"]),
                "run": r["run_id"],
            }
            for r in replays
        ],
        "ingested": [
            {
                "client": i["client"],
                "keyId": i["key_id"],
                "topic": i["topic"],
                "receivedAt": iso(i["received_at"]),
            }
            for i in sources
        ],
    }


def _delivery(row: Any) -> dict[str, Any]:
    return {
        "eventId": row["event_id"],
        "eventType": row["event_type"],
        "state": row["state"],
        "attempts": row["attempts"],
        "to": row["phone_masked"],
        "messageSid": row["message_sid"],
        # The rendered body's parts and encoding (what Twilio bills), recorded at the send.
        "segments": row["segments"],
        "encoding": row["encoding"],
        "errorCode": row["error_code"],
        # Free text from errors: scrubbed like a log line in case a provider echoed PII.
        "lastError": scrub(row["last_error"]) if row["last_error"] else None,
        "consentAt": iso(row["consent_at"]),
        "consentPurpose": row["consent_purpose"],
        "consentSource": row["consent_source"],
        "leaseOwner": row["lease_owner"],
        "leaseUntil": iso(row["lease_until"]),
        "sendingStartedAt": iso(row["sending_started_at"]),
        "reported": row["reported"],
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
    }


def _consent(delivery: dict[str, Any]) -> str:
    purpose, source = delivery["consentPurpose"], delivery["consentSource"]
    return f"{delivery['consentAt']}  purpose={purpose or '-'}  source={source or '-'}"


def render(story: dict[str, Any]) -> str:
    lines: list[str] = []
    delivery = story["delivery"]
    if delivery is None:
        lines.append(f"event      {story['eventId'] or '-'} (no delivery row: not claimed)")
    else:
        fields = [
            ("event", f"{delivery['eventId']} ({delivery['eventType']})"),
            ("state", f"{delivery['state']}  attempts={delivery['attempts']}"),
            ("to", delivery["to"]),
            ("message", delivery["messageSid"]),
            ("segments", _segments(delivery)),
            ("error", _error(delivery)),
            ("consent", _consent(delivery)),
            ("lease", f"{delivery['leaseOwner'] or '-'} until {delivery['leaseUntil'] or '-'}"),
            ("sending", delivery["sendingStartedAt"]),
            ("created", delivery["createdAt"]),
            ("updated", delivery["updatedAt"]),
        ]
        lines.extend(f"{name:<10} {value if value is not None else '-'}" for name, value in fields)
    lines.append("")
    if story["history"]:
        lines.append("status history")
        rows = [
            [
                h["occurredAt"] or "-",
                h["status"],
                str(h["errorCode"] or ""),
                h["source"],
                h["messageSid"] or "",
            ]
            for h in story["history"]
        ]
        lines.append(table(rows, ["occurred at", "status", "error", "source", "sid"]))
    else:
        lines.append("status history: none")
    if story["replays"]:
        lines.append("")
        lines.append("dlq replays")
        rows = [
            [
                r["replayedAt"] or "-",
                r["from"],
                r["reason"] or "",
                r["operator"],
                str(r["run"] or "-"),
            ]
            for r in story["replays"]
        ]
        lines.append(table(rows, ["replayed at", "from", "reason", "operator", "run"]))
    if story["ingested"]:
        lines.append("")
        lines.append("ingested over HTTP")
        rows = [[i["receivedAt"] or "-", i["client"], i["keyId"]] for i in story["ingested"]]
        lines.append(table(rows, ["received at", "client", "key id"]))
    return "\n".join(lines)


def _segments(delivery: dict[str, Any]) -> str | None:
    if delivery["segments"] is None:
        return None
    return f"{delivery['segments']}  encoding={delivery['encoding'] or '-'}"


def _error(delivery: dict[str, Any]) -> str | None:
    parts = [str(delivery["errorCode"])] if delivery["errorCode"] is not None else []
    if delivery["lastError"]:
        parts.append(f"({delivery['lastError']})")
    return " ".join(parts) or None


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ident", metavar="ID", help="an eventId or a Twilio Message SID (SM...)")


def handle(args: argparse.Namespace, settings: Settings) -> int:
    ident: str = args.ident
    story = run_with_engine(settings, lambda engine: load_story(engine, ident))
    if story is None:
        raise NotFoundError(f"no message with eventId or Message SID {ident!r}")
    emit(args, story, lambda: render(story))
    return 0

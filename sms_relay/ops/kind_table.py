"""`sms-relay kinds`: every event kind with its topic and policy, and where each came from."""

from __future__ import annotations

import argparse
from typing import Any

from sms_relay.kinds.event_kind import EventKind
from sms_relay.kinds.kind_settings import topic_field
from sms_relay.kinds.registry import EVENT_KINDS
from sms_relay.ops.common import emit, table
from sms_relay.settings import Settings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--served", action="store_true", help="only the kinds of SMS_KINDS (default: all kinds)"
    )


def _value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def describe(kind: EventKind, settings: Settings) -> dict[str, Any]:
    """One kind as `--json` prints it. Raises ConfigurationError on a broken template."""
    kind.check()
    kafka = settings.kafka
    topic = kafka.topic_of(kind.name)
    policy = settings.kind_policy(kind.name)
    prefix = str(type(policy).model_config.get("env_prefix", ""))
    sources = policy.sources()
    purposes = kind.consent_purposes
    return {
        "kind": kind.name,
        "served": kind.name in settings.sending.kinds,
        "topic": {
            "variable": f"KAFKA_{topic_field(kind.name).upper()}",
            "value": topic,
            "source": "env" if topic_field(kind.name) in kafka.model_fields_set else "default",
        },
        "retryTopics": settings.retry_topics(topic),
        "dlqTopic": kafka.dlq_topic(topic),
        "locales": sorted(kind.templates),
        "consentPurposes": None if purposes is None else sorted(purposes),
        "policy": [
            {
                "variable": prefix + name.upper(),
                "value": _value(getattr(policy, name)),
                "source": sources[name],
            }
            for name in type(policy).model_fields
        ],
    }


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "(empty)"
    return "(unset)" if value is None else str(value)


def _human(kinds: list[dict[str, Any]]) -> str:
    rows = []
    for kind in kinds:
        name = kind["kind"] + ("" if kind["served"] else " (not served)")
        topic = kind["topic"]
        rows.append([name, topic["variable"], topic["value"], topic["source"]])
        purposes = kind["consentPurposes"]
        rows.append(["", "consent purposes", _text(purposes) if purposes else "any", "kind module"])
        rows.append(["", "locales", _text(kind["locales"]), "kind module"])
        rows.extend(
            ["", setting["variable"], _text(setting["value"]), setting["source"]]
            for setting in kind["policy"]
        )
    return table(rows, ["kind", "setting", "value", "from"])


def handle(args: argparse.Namespace, settings: Settings) -> int:
    names = settings.sending.kinds if args.served else tuple(EVENT_KINDS)
    kinds = [describe(EVENT_KINDS[name], settings) for name in names]
    emit(args, kinds, lambda: _human(kinds))
    return 0

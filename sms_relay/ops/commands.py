"""Registers the on-call subcommands of `sms-relay`: trace, dlq, suppress, produce, api-keys,
kinds, prune, forget."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from sms_relay.ops import api_key_commands as apikeys
from sms_relay.ops import dlq, dlq_replay, kind_table, produce, trace
from sms_relay.ops import retention_commands as retention
from sms_relay.ops import suppress_commands as suppress
from sms_relay.ops.common import Handler, add_json_flag, command

Configure = Callable[[argparse.ArgumentParser], None]


def _leaf(
    parent: Any, name: str, path: str, handler: Handler, configure: Configure, text: str
) -> argparse.ArgumentParser:
    """A command: its first sentence (before the colon) is the line in the parent's list."""
    summary = text.split(":", maxsplit=1)[0]
    parser: argparse.ArgumentParser = parent.add_parser(name, help=summary, description=text)
    configure(parser)
    if not any(action.dest == "json" for action in parser._actions):
        add_json_flag(parser)
    parser.set_defaults(handler=command(path, handler))
    return parser


def _group(commands: Any, name: str, text: str) -> Any:
    parser: argparse.ArgumentParser = commands.add_parser(name, help=text, description=text)
    return parser.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")


def register(commands: Any) -> None:
    """Add `trace`, `dlq`, `suppress`, `produce`, `api-keys`, `kinds`, `prune` and `forget`
    to the `sms-relay` subparsers."""
    _leaf(
        commands,
        "trace",
        "trace",
        trace.handle,
        trace.configure,
        "the whole story of one message: its delivery row (state, attempts, masked number, "
        "SID, error code, consent, lease) and every status step, by eventId or Message SID",
    )

    queue = _group(commands, "dlq", "inspect and replay the dead-letter topic")
    _leaf(
        queue,
        "list",
        "dlq list",
        dlq.handle_list,
        dlq.configure_filters,
        "list dead-lettered records: read from the beginning in pages, filters applied "
        "while reading, commits nothing",
    )
    _leaf(
        queue,
        "replay",
        "dlq replay",
        dlq_replay.handle_replay,
        dlq_replay.configure_replay,
        "produce dead-lettered records to the main topic again: through the normal path "
        "(dedupe, suppression and consent still hold), with an audit row per record; "
        "Ctrl-C stops it cleanly and --resume RUN goes on where it stopped",
    )

    numbers = _group(commands, "suppress", "numbers that must never get an SMS")
    _leaf(
        numbers,
        "add",
        "suppress add",
        suppress.handle_add,
        suppress.configure_phone,
        "suppress a number: stored as a keyed hash and a masked form, reason manual",
    )
    _leaf(
        numbers,
        "remove",
        "suppress remove",
        suppress.handle_remove,
        suppress.configure_remove,
        "lift a manual suppression: a recipient's own STOP needs --force",
    )
    _leaf(
        numbers,
        "list",
        "suppress list",
        suppress.handle_list,
        suppress.configure_list,
        "list suppressed numbers: masked, with their reasons and since when",
    )

    _leaf(
        commands,
        "produce",
        "produce",
        produce.handle,
        produce.configure,
        "produce order-shipped events for demos and load: samples (fictional 555-01xx "
        "numbers, consent in the past) or a JSON-lines file",
    )

    keys = _group(commands, "api-keys", "API keys of the upstream clients that ingest over HTTP")
    _leaf(
        keys,
        "create",
        "api-keys create",
        apikeys.handle_create,
        apikeys.configure_create,
        "create a key for a client: printed once, stored only as its SHA-256, scoped to "
        "event kinds, with its own rate limit",
    )
    _leaf(
        keys,
        "list",
        "api-keys list",
        apikeys.handle_list,
        apikeys.configure_list,
        "list keys: ids, clients, kinds and limits (never the keys)",
    )
    _leaf(
        keys,
        "revoke",
        "api-keys revoke",
        apikeys.handle_revoke,
        apikeys.configure_revoke,
        "revoke a key: its next request is refused with 401",
    )
    _leaf(
        commands,
        "kinds",
        "kinds",
        kind_table.handle,
        kind_table.configure,
        "the event kinds: each one's topic, consent purposes, locales and policy settings, "
        "with their effective values and where each came from (env or default)",
    )

    _leaf(
        commands,
        "prune",
        "prune",
        retention.handle_prune,
        retention.configure_prune,
        "delete what every table keeps past its retention, now, in small batches: per "
        "table what went (or would go, with --dry-run); the callbacks process also does it "
        "every SMS_PRUNE_INTERVAL_SECONDS",
    )
    _leaf(
        commands,
        "forget",
        "forget",
        retention.handle_forget,
        retention.configure_forget,
        "erase a number (or --file, one a line): every delivery, status step and record of "
        "it in every table but its suppression, with an audit row without the number; "
        "names what it cannot reach (Kafka topics, Twilio's message log)",
    )

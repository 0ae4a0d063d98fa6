"""`sms-relay api-keys create|list|revoke`: the keys upstream clients ingest events with.

The key is printed once, by `create`; only its SHA-256 is stored.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sms_relay.adapters.postgres.api_key_rows import PostgresApiKeys
from sms_relay.adapters.postgres.engine import AsyncEngine
from sms_relay.errors import NotFoundError, OpsError
from sms_relay.kinds.registry import EVENT_KINDS
from sms_relay.ops.common import emit, iso, run_with_engine, table
from sms_relay.settings import Settings
from sms_relay.status.api_keys import CLIENT_NAME, ApiKey, ApiKeys


def configure_create(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("client", help="who the key is for, e.g. billing-service (the audit name)")
    parser.add_argument(
        "--kinds",
        required=True,
        help=f"comma-separated event kinds it may send: {', '.join(sorted(EVENT_KINDS))}",
    )
    parser.add_argument(
        "--rate-limit", type=int, default=600, help="requests per window (default 600)"
    )
    parser.add_argument(
        "--window", type=float, default=60.0, help="the rate limit's window in seconds (60)"
    )


def configure_list(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--all", action="store_true", help="include revoked keys")


def configure_revoke(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key_id", metavar="KEY_ID", help="the key id shown by create and list")


def _keys(engine: AsyncEngine) -> ApiKeys:
    return ApiKeys(PostgresApiKeys(engine))


def _describe(key: ApiKey) -> dict[str, Any]:
    return {
        "keyId": key.key_id,
        "client": key.client,
        "eventKinds": list(key.event_kinds),
        "rateLimit": key.rate_limit,
        "rateWindowSeconds": key.rate_window_seconds,
        "createdAt": iso(key.created_at),
        "revokedAt": iso(key.revoked_at),
    }


def handle_create(args: argparse.Namespace, settings: Settings) -> int:
    kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
    unknown = sorted(set(kinds) - EVENT_KINDS.keys())
    if not kinds or unknown:
        raise OpsError(f"unknown event kind(s) {unknown or kinds}; known: {sorted(EVENT_KINDS)}")
    if not CLIENT_NAME.match(args.client):
        raise OpsError("the client name must be 1-64 letters, digits, '.', '_' or '-'")
    if args.rate_limit < 1 or args.window <= 0:
        raise OpsError("--rate-limit must be at least 1 and --window above 0")
    record, key = run_with_engine(
        settings,
        lambda engine: _keys(engine).create(args.client, kinds, args.rate_limit, args.window),
    )
    described = _describe(record)
    emit(
        args,
        {**described, "apiKey": key},
        lambda: (
            f"{key}\nkey id {record.key_id} for {record.client}, kinds "
            f"{','.join(record.event_kinds)}, {record.rate_limit} requests per "
            f"{record.rate_window_seconds:g} s"
        ),
    )
    print("store the key now: it is not shown again", file=sys.stderr)
    return 0


def handle_list(args: argparse.Namespace, settings: Settings) -> int:
    keys = run_with_engine(settings, lambda engine: _keys(engine).list(include_revoked=args.all))
    rows = [_describe(key) for key in keys]
    emit(
        args,
        rows,
        lambda: (
            table(
                [
                    [
                        r["keyId"],
                        r["client"],
                        ",".join(r["eventKinds"]),
                        f"{r['rateLimit']}/{r['rateWindowSeconds']:g}s",
                        r["createdAt"] or "-",
                        r["revokedAt"] or "-",
                    ]
                    for r in rows
                ],
                ["key id", "client", "kinds", "limit", "created", "revoked"],
            )
            + f"\n{len(rows)} key(s)"
        ),
    )
    return 0


def handle_revoke(args: argparse.Namespace, settings: Settings) -> int:
    key_id: str = args.key_id
    key = run_with_engine(settings, lambda engine: _keys(engine).revoke(key_id))
    if key is None:
        raise NotFoundError(f"no API key with id {key_id!r}")
    emit(
        args,
        _describe(key),
        lambda: f"revoked key {key.key_id} of {key.client} (since {iso(key.revoked_at)})",
    )
    return 0

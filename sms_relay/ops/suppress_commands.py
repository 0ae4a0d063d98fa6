"""`sms-relay suppress add|remove|list`: numbers that must never get an SMS.

Numbers are stored as the keyed hash (and a masked form to show), never in clear.
"""

from __future__ import annotations

import argparse
from typing import Any

from schemas.phone import check_e164
from sms_relay.adapters.postgres import suppressions
from sms_relay.adapters.postgres.engine import AsyncEngine
from sms_relay.errors import NotFoundError, OpsError
from sms_relay.masking import mask_phone, phone_hash
from sms_relay.ops.common import emit, iso, run_with_engine, table
from sms_relay.settings import Settings

MANUAL = "manual"


def configure_phone(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("phone", help="the number in E.164 format, e.g. +12125550123")


def configure_remove(parser: argparse.ArgumentParser) -> None:
    configure_phone(parser)
    parser.add_argument(
        "--force",
        action="store_true",
        help="also remove a suppression the recipient asked for (STOP) or Twilio reported "
        "(21610); only with the recipient's renewed consent",
    )


def configure_list(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=None, help="at most this many, newest first")


def _key(settings: Settings, phone: str) -> tuple[str, str]:
    try:
        check_e164(phone)
    except ValueError as error:
        raise OpsError(f"invalid number: {error}") from None
    return phone_hash(settings.phone_hash_key.get_secret_value(), phone), mask_phone(phone)


def handle_add(args: argparse.Namespace, settings: Settings) -> int:
    hashed, masked = _key(settings, args.phone)

    async def work(engine: AsyncEngine) -> dict[str, Any]:
        added, reason, since = await suppressions.add_one(engine, hashed, masked, MANUAL)
        return {"to": masked, "added": added, "reason": reason, "since": iso(since)}

    result = run_with_engine(settings, work)
    emit(
        args,
        result,
        lambda: (
            f"suppressed {masked} (reason {MANUAL})"
            if result["added"]
            else f"{masked} was already suppressed "
            f"(reason {result['reason']}, since {result['since']})"
        ),
    )
    return 0


def handle_remove(args: argparse.Namespace, settings: Settings) -> int:
    hashed, masked = _key(settings, args.phone)

    def may_remove(reason: str) -> None:
        if reason != MANUAL and not args.force:
            raise OpsError(
                f"{masked} is suppressed for {reason!r}, not by an operator; "
                "--force removes it (only with the recipient's renewed consent)"
            )

    async def work(engine: AsyncEngine) -> str:
        reason = await suppressions.remove_one(engine, hashed, may_remove)
        if reason is None:
            raise NotFoundError(f"{masked} is not suppressed")
        return reason

    reason = run_with_engine(settings, work)
    emit(
        args,
        {"to": masked, "removed": True, "reason": reason},
        lambda: f"removed the suppression of {masked} (was {reason})",
    )
    return 0


def handle_list(args: argparse.Namespace, settings: Settings) -> int:
    limit: int | None = args.limit

    async def work(engine: AsyncEngine) -> list[dict[str, Any]]:
        rows = await suppressions.listed(engine, limit)
        return [
            {"to": r["phone_masked"], "reason": r["reason"], "since": iso(r["created_at"])}
            for r in rows
        ]

    rows = run_with_engine(settings, work)
    emit(
        args,
        rows,
        lambda: (
            table(
                [[r["to"], r["reason"], r["since"] or "-"] for r in rows], ["to", "reason", "since"]
            )
            + f"\n{len(rows)} suppressed number(s)"
        ),
    )
    return 0

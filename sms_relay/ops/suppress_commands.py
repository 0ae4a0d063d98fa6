"""`sms-relay suppress add|remove|list`: numbers that must never get an SMS.

Numbers are stored as the keyed hash (and a masked form to show), never in clear.
"""

from __future__ import annotations

import argparse
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.phone import check_e164
from sms_relay.adapters.postgres.tables import suppressions
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
        async with engine.begin() as connection:
            inserted = (
                await connection.execute(
                    insert(suppressions)
                    .values(phone_hash=hashed, phone_masked=masked, reason=MANUAL)
                    .on_conflict_do_nothing(index_elements=["phone_hash"])
                    .returning(suppressions.c.reason, suppressions.c.created_at)
                )
            ).first()
            if inserted is not None:
                return {"to": masked, "added": True, "reason": MANUAL, "since": iso(inserted[1])}
            existing = (
                await connection.execute(
                    select(suppressions.c.reason, suppressions.c.created_at).where(
                        suppressions.c.phone_hash == hashed
                    )
                )
            ).one()
            return {"to": masked, "added": False, "reason": existing[0], "since": iso(existing[1])}

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

    async def work(engine: AsyncEngine) -> str:
        async with engine.begin() as connection:
            reason = (
                await connection.execute(
                    select(suppressions.c.reason)
                    .where(suppressions.c.phone_hash == hashed)
                    .with_for_update()
                )
            ).scalar()
            if reason is None:
                raise NotFoundError(f"{masked} is not suppressed")
            if reason != MANUAL and not args.force:
                raise OpsError(
                    f"{masked} is suppressed for {reason!r}, not by an operator; "
                    "--force removes it (only with the recipient's renewed consent)"
                )
            await connection.execute(
                delete(suppressions).where(suppressions.c.phone_hash == hashed)
            )
            return str(reason)

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
        query = select(suppressions).order_by(
            suppressions.c.created_at.desc(), suppressions.c.phone_masked
        )
        if limit is not None:
            query = query.limit(limit)
        async with engine.connect() as connection:
            rows = (await connection.execute(query)).mappings().all()
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

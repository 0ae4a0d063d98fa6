"""What every on-call command shares: errors as one line, output, progress, the database."""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import IO, Any, TypeVar

from confluent_kafka import KafkaError, KafkaException

from sms_relay.adapters.postgres.engine import AsyncEngine, create_engine
from sms_relay.errors import (
    BrokerUnavailableError,
    DatabaseStatementError,
    DatabaseUnavailableError,
    OpsError,
)
from sms_relay.logs import scrub, secrets_of
from sms_relay.settings import Settings

T = TypeVar("T")
Handler = Callable[[argparse.Namespace, Settings], int]

# librdkafka reports every failed connection attempt; a command answers with one line.
KAFKA_LOGGER = logging.getLogger("sms_relay.ops.kafka")
KAFKA_LOGGER.addHandler(logging.NullHandler())
KAFKA_LOGGER.propagate = False
# How long a command waits for the broker's first answer before saying it is unreachable.
METADATA_TIMEOUT = 15.0


def command(name: str, handler: Handler) -> Handler:
    """Wrap a handler: any failure becomes `sms-relay <name>: <one line>` and an exit status."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace, settings: Settings) -> int:
        try:
            return handler(args, settings)
        except OpsError as error:
            message, code = str(error), error.exit_code
        except (DatabaseUnavailableError, DatabaseStatementError) as error:
            message, code = str(error), 2
        except KafkaException as error:
            message, code = f"Kafka error: {error.args[0].str() if error.args else error}", 2
        except BrokerUnavailableError as error:
            message, code = str(error), 2
        except OSError as error:
            message, code = f"{type(error).__name__}: {error}", 2
        line = scrub(f"sms-relay {name}: {message}", secrets_of(settings))
        print(line.splitlines()[0] if line else line, file=sys.stderr)
        return code

    return run


def kafka_unreachable(bootstrap_servers: str, error: Exception) -> OpsError:
    """The one line for a broker that did not answer a metadata request."""
    detail = error.args[0] if error.args else error
    text = detail.str() if isinstance(detail, KafkaError) else str(detail)
    return OpsError(f"Kafka at {bootstrap_servers} did not answer: {text}")


def run_with_engine(settings: Settings, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run `work` on a fresh async engine in its own event loop, then dispose of it."""

    async def main() -> T:
        engine = create_engine(settings.database_url.get_secret_value(), pool_size=1)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document instead of text"
    )


def emit(args: argparse.Namespace, data: Any, human: Callable[[], str]) -> None:
    """Print `data` as JSON with `--json`, else the human rendering."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=_json_default))
    else:
        text = human()
        if text:
            print(text)


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """An ISO-8601 time for argparse; a time without offset is taken as UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO-8601 time like 2026-06-02T09:00:00Z"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def table(rows: list[list[str]], header: list[str]) -> str:
    """Left-aligned columns, two spaces apart."""
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [header, *rows]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


class Progress:
    """`\\r[#####     ] 50/100` on stderr (or any stream); a newline when finished."""

    def __init__(self, total: int, stream: IO[str] | None = None, width: int = 30) -> None:
        self.total = total
        self.done = 0
        self._stream = stream or sys.stderr
        self._width = width

    def advance(self, count: int = 1) -> None:
        self.done += count
        self._draw()

    def _draw(self) -> None:
        if self.total <= 0:
            return
        filled = self._width * min(self.done, self.total) // self.total
        bar = "#" * filled + " " * (self._width - filled)
        self._stream.write(f"\r[{bar}] {self.done}/{self.total}")
        self._stream.flush()

    def finish(self) -> None:
        if self.total > 0:
            if self.done == 0:
                self._draw()
            self._stream.write("\n")
            self._stream.flush()

"""`sms-relay`: one console script, a subcommand per deployable and per on-call task."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from sms_relay.errors import SmsRelayError
from sms_relay.settings import Settings, load_settings

Command = Callable[[argparse.Namespace, Settings], int]


def _migrate(_args: argparse.Namespace, settings: Settings) -> int:
    from sms_relay.migrations import upgrade

    upgrade(settings.database_url.get_secret_value())
    print("database schema is up to date")
    return 0


def _topics(_args: argparse.Namespace, settings: Settings) -> int:
    from sms_relay.adapters.kafka.clients import configure_group
    from sms_relay.adapters.kafka.topics import cluster_topics, ensure_topics, topic_names
    from sms_relay.domain.retry import delay_named_tiers

    tiers, kinds = settings.sending.retry_tiers, settings.sending.kinds
    created = ensure_topics(settings.kafka, tiers, kinds)
    for name in topic_names(settings.kafka, tiers, kinds):
        print(f"{name}: {'created' if name in created else 'exists'}")
    delays = settings.sending.tier_delays()
    existing = cluster_topics(settings.kafka)
    inputs = [settings.kafka.topic_of(kind) for kind in kinds]
    for name in sorted(n for t in inputs for n in delay_named_tiers(t, existing, delays)):
        print(f"{name}: named after its delay; the consumer drains it, delete it once empty")
    configured = configure_group(settings.kafka)
    if configured:
        values = ", ".join(f"{name}={value}" for name, value in configured.items())
        print(f"group {settings.kafka.consumer_group}: {values}")
    return 0


def _consumer(_args: argparse.Namespace, settings: Settings) -> int:
    from consumer.app import run

    return int(run(settings))


def _callbacks(_args: argparse.Namespace, settings: Settings) -> int:
    from callbacks.app import run

    return run(settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sms-relay",
        description="Kafka events to exactly one Twilio SMS each. Configured by the "
        "environment (see .env.example).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Command, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    add("consumer", _consumer, "run the order-shipped consumer (Kafka in, SMS out)")
    add("callbacks", _callbacks, "run the HTTP service for Twilio webhooks and Verify")
    add("migrate", _migrate, "apply database migrations (safe to run twice)")
    add(
        "topics",
        _topics,
        "create the Kafka topics that are missing, and set the consumer group's session "
        "timeout when KAFKA_GROUP_SESSION_TIMEOUT_MS is set (safe to run twice)",
    )

    from sms_relay.simulator import command as simulator_cli

    simulator = commands.add_parser(
        "simulator",
        help="run the local Twilio-compatible simulator (no real SMS is sent)",
        description="A local Twilio-compatible server for tests, benchmarks and demos. "
        "Takes its account SID and auth token from TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN.",
    )
    simulator_cli.configure_parser(simulator)
    simulator.set_defaults(handler=None, run=simulator_cli.run)

    from sms_relay.ops import commands as ops_cli

    ops_cli.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.handler is None:  # the simulator needs no Settings of ours
            return int(args.run(args))
        return int(args.handler(args, load_settings()))
    except SmsRelayError as error:
        print(f"sms-relay {args.command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

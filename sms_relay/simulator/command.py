"""`sms-relay simulator`: serve the Twilio simulator until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import os
import re
import sys

from .config import (
    DEFAULT_ACCOUNT_SID,
    DEFAULT_AUTH_TOKEN,
    MAX_RETRY_COUNT,
    SimulatorConfig,
    parse_retry_policy,
)

DEFAULT_PORT = 8031


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's flags to `parser` (the `simulator` sub-command)."""
    # A string default goes through `type=` at parse time: a bad $SIMULATOR_PORT is a usage error.
    default_port = os.environ.get("SIMULATOR_PORT") or str(DEFAULT_PORT)
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    add("--port", type=_port, default=default_port, help="port (default: $SIMULATOR_PORT or 8031)")
    add("--latency-ms", type=_non_negative, default=0.0, help="added to every API request")
    add("--latency-jitter-ms", type=_non_negative, default=0.0, help="+/- random latency")
    add("--rate-429", type=_rate, default=0.0, help="share of creates answered 429")
    add("--rate-500", type=_rate, default=0.0, help="share of creates answered 500")
    add("--rate-503", type=_rate, default=0.0, help="share of creates answered 503")
    add(
        "--rate-timeout",
        type=_rate,
        default=0.0,
        help="share of creates held --timeout-hold-s, then closed, creating nothing",
    )
    add(
        "--rate-500-after-create",
        type=_rate,
        default=0.0,
        help="share of creates that create the message, then answer 500",
    )
    add(
        "--rate-drop-after-create",
        type=_rate,
        default=0.0,
        help="share of creates that create the message, then close the connection",
    )
    add(
        "--rate-timeout-after-create",
        type=_rate,
        default=0.0,
        help="share of creates that create the message, then hang --timeout-hold-s and close",
    )
    add("--rate-list-500", type=_rate, default=0.0, help="share of list calls answered 500")
    add("--rate-list-503", type=_rate, default=0.0, help="share of list calls answered 503")
    add(
        "--rate-list-timeout",
        type=_rate,
        default=0.0,
        help="share of list calls held --timeout-hold-s, then closed",
    )
    add(
        "--timeout-hold-s",
        type=_non_negative,
        default=30.0,
        help="how long a timeout fault holds the request (default: %(default)s)",
    )
    add("--max-mps", type=_non_negative, default=0.0, help="creates per second (0: unlimited)")
    add(
        "--queue-hold-ms",
        type=_non_negative,
        default=0.0,
        help="time every created message stays queued, without date_sent (Twilio's queue)",
    )
    add(
        "--sender-mps",
        type=_non_negative,
        default=0.0,
        help="segments each sender sends per second, the rest queue (long code: 1; 0: no limit)",
    )
    add(
        "--list-lag-ms",
        type=_non_negative,
        default=0.0,
        help="a created message shows in list results only this long after creation",
    )
    add("--callback-delay-ms", type=_non_negative, default=50.0, help="between status steps")
    add(
        "--callback-retry-count",
        type=_retry_count,
        default=1,
        help="retries of a failed status callback, Twilio's rc (default: %(default)s)",
    )
    add(
        "--callback-retry-policy",
        type=_retry_policy,
        default="ct",
        help="failures retried, Twilio's rp: ct,rt,4xx,5xx or all (default: %(default)s); "
        "--callback-retry-count=2 --callback-retry-policy=ct,rt,5xx retries 5xx as before",
    )
    add(
        "--callback-timeout-ms",
        type=_positive,
        default=15000.0,
        help="read timeout of a status callback, Twilio's rt (default: %(default)s)",
    )
    add(
        "--fail-number",
        action="append",
        type=_fail_number,
        default=[],
        metavar="NUMBER=CODE",
        help="deliver messages to NUMBER as undelivered/failed with CODE, e.g. +15551230000=30003",
    )
    add("--duplicate-callbacks", type=_rate, default=0.0, help="share of callbacks sent twice")
    add("--reorder-callbacks", action="store_true", help="send delivered before sent")
    add("--drop-callbacks", type=_rate, default=0.0, help="share of callbacks never sent")
    add("--inbound-url", default=None, help="where inbound SMS are POSTed")
    add("--seed", type=int, default=None, help="seed for the simulated faults and codes")


def build_config(args: argparse.Namespace) -> SimulatorConfig:
    """The simulator settings from parsed flags and the TWILIO_* credentials."""
    return SimulatorConfig(
        account_sid=os.environ.get("TWILIO_ACCOUNT_SID") or DEFAULT_ACCOUNT_SID,
        auth_token=os.environ.get("TWILIO_AUTH_TOKEN") or DEFAULT_AUTH_TOKEN,
        latency_ms=args.latency_ms,
        latency_jitter_ms=args.latency_jitter_ms,
        rate_429=args.rate_429,
        rate_500=args.rate_500,
        rate_503=args.rate_503,
        rate_timeout=args.rate_timeout,
        rate_500_after_create=args.rate_500_after_create,
        rate_drop_after_create=args.rate_drop_after_create,
        rate_timeout_after_create=args.rate_timeout_after_create,
        rate_list_500=args.rate_list_500,
        rate_list_503=args.rate_list_503,
        rate_list_timeout=args.rate_list_timeout,
        timeout_hold_s=args.timeout_hold_s,
        max_mps=args.max_mps,
        queue_hold_ms=args.queue_hold_ms,
        sender_mps=args.sender_mps,
        list_lag_ms=args.list_lag_ms,
        callback_delay_ms=args.callback_delay_ms,
        callback_retry_count=args.callback_retry_count,
        callback_retry_policy=args.callback_retry_policy,
        callback_timeout_ms=args.callback_timeout_ms,
        fail_numbers=dict(args.fail_number),
        duplicate_callbacks=args.duplicate_callbacks,
        reorder_callbacks=args.reorder_callbacks,
        drop_callbacks=args.drop_callbacks,
        inbound_url=args.inbound_url,
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; 0 on a clean stop, 1 when it cannot start."""
    from aiohttp import web

    from .app import PrivacyAccessLogger, create_simulator_app

    try:
        config = build_config(args)
        app = create_simulator_app(config)
    except ValueError as exc:
        print(f"sms-relay simulator: invalid settings: {exc}", file=sys.stderr)
        return 1

    def banner(running_on: str) -> None:
        # aiohttp's own line names the bound address (the real port when --port=0).
        found = re.search(r"https?://[^\s,]+", running_on)
        address = found.group(0) if found else f"http://{args.host}:{args.port}"
        print(
            f"sms-relay simulator: Twilio simulator on {address} (account "
            f"{config.account_sid}) - a local test double, no real SMS is sent",
            flush=True,
        )

    try:
        web.run_app(
            app,
            host=args.host,
            port=args.port,
            print=banner,  # called once the port is bound
            access_log_class=PrivacyAccessLogger,
            shutdown_timeout=5.0,
            handle_signals=True,
        )
    except OSError as exc:
        print(
            f"sms-relay simulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return 1
    return 0


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return port


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {value}")
    return value


def _rate(text: str) -> float:
    value = _non_negative(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"a rate is between 0 and 1, got {value}")
    return value


def _positive(text: str) -> float:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _retry_count(text: str) -> int:
    if not text.isdigit() or int(text) > MAX_RETRY_COUNT:
        raise argparse.ArgumentTypeError(f"a retry count is 0 to {MAX_RETRY_COUNT}: {text!r}")
    return int(text)


def _retry_policy(text: str) -> str:
    if parse_retry_policy(text) is None:
        raise argparse.ArgumentTypeError(f"expected a list of ct, rt, 4xx, 5xx, all: {text!r}")
    return text


def _fail_number(text: str) -> tuple[str, int]:
    number, sep, code = text.partition("=")
    if not sep or not number or not code.isdigit():
        raise argparse.ArgumentTypeError(f"expected NUMBER=CODE, e.g. +15551230000=30003: {text!r}")
    return number.strip(), int(code)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry: `python -m sms_relay.simulator.command`."""
    parser = argparse.ArgumentParser(prog="sms-relay simulator", description=__doc__)
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

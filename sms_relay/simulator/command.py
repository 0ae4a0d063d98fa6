"""`sms-relay simulator`: serve the Twilio simulator until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from .config import (
    DEFAULT_ACCOUNT_SID,
    DEFAULT_AUTH_TOKEN,
    MAX_RETRY_COUNT,
    SimulatorConfig,
    parse_retry_policy,
)

DEFAULT_PORT = 8031


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


def _value(parse: Callable[[str], object], default: object, help: str) -> dict[str, Any]:
    """The argparse options of a flag that takes one value."""
    return {"type": parse, "default": default, "help": help}


# Every flag below sets the SimulatorConfig field of its name (`--fail-number`, repeated,
# fills `fail_numbers`); the table drives both the parser and `build_config`, in help order.
_CONFIG_FLAGS: dict[str, dict[str, Any]] = {
    "latency_ms": _value(_non_negative, 0.0, "added to every API request"),
    "latency_jitter_ms": _value(_non_negative, 0.0, "+/- random latency"),
    "rate_429": _value(_rate, 0.0, "share of creates answered 429"),
    "rate_500": _value(_rate, 0.0, "share of creates answered 500"),
    "rate_503": _value(_rate, 0.0, "share of creates answered 503"),
    "rate_timeout": _value(
        _rate, 0.0, "share of creates held --timeout-hold-s, then closed, creating nothing"
    ),
    "rate_500_after_create": _value(
        _rate, 0.0, "share of creates that create the message, then answer 500"
    ),
    "rate_drop_after_create": _value(
        _rate, 0.0, "share of creates that create the message, then close the connection"
    ),
    "rate_timeout_after_create": _value(
        _rate,
        0.0,
        "share of creates that create the message, then hang --timeout-hold-s and close",
    ),
    "rate_list_500": _value(_rate, 0.0, "share of list calls answered 500"),
    "rate_list_503": _value(_rate, 0.0, "share of list calls answered 503"),
    "rate_list_timeout": _value(
        _rate, 0.0, "share of list calls held --timeout-hold-s, then closed"
    ),
    "timeout_hold_s": _value(
        _non_negative, 30.0, "how long a timeout fault holds the request (default: %(default)s)"
    ),
    "max_mps": _value(_non_negative, 0.0, "creates per second (0: unlimited)"),
    "queue_hold_ms": _value(
        _non_negative,
        0.0,
        "time every created message stays queued, without date_sent (Twilio's queue)",
    ),
    "sender_mps": _value(
        _non_negative,
        0.0,
        "segments each sender sends per second, the rest queue (long code: 1; 0: no limit)",
    ),
    "list_lag_ms": _value(
        _non_negative, 0.0, "a created message shows in list results only this long after creation"
    ),
    "callback_delay_ms": _value(_non_negative, 50.0, "between status steps"),
    "callback_retry_count": _value(
        _retry_count, 1, "retries of a failed status callback, Twilio's rc (default: %(default)s)"
    ),
    "callback_retry_policy": _value(
        _retry_policy,
        "ct",
        "failures retried, Twilio's rp: ct,rt,4xx,5xx or all (default: %(default)s); "
        "--callback-retry-count=2 --callback-retry-policy=ct,rt,5xx retries 5xx as before",
    ),
    "callback_timeout_ms": _value(
        _positive, 15000.0, "read timeout of a status callback, Twilio's rt (default: %(default)s)"
    ),
    "fail_number": {
        **_value(
            _fail_number,
            [],
            "deliver messages to NUMBER as undelivered/failed with CODE, e.g. +15551230000=30003",
        ),
        "action": "append",
        "metavar": "NUMBER=CODE",
    },
    "duplicate_callbacks": _value(_rate, 0.0, "share of callbacks sent twice"),
    "reorder_callbacks": {"action": "store_true", "help": "send delivered before sent"},
    "drop_callbacks": _value(_rate, 0.0, "share of callbacks never sent"),
    "inbound_url": {"default": None, "help": "where inbound SMS are POSTed"},
    "seed": _value(int, None, "seed for the simulated faults and codes"),
}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's flags to `parser` (the `simulator` sub-command)."""
    # A string default goes through `type=` at parse time: a bad $SIMULATOR_PORT is a usage error.
    default_port = os.environ.get("SIMULATOR_PORT") or str(DEFAULT_PORT)
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=_port, default=default_port, help="port (default: $SIMULATOR_PORT or 8031)"
    )
    for name, options in _CONFIG_FLAGS.items():
        parser.add_argument("--" + name.replace("_", "-"), **options)


def build_config(args: argparse.Namespace) -> SimulatorConfig:
    """The simulator settings from parsed flags and the TWILIO_* credentials."""
    values = {name: getattr(args, name) for name in _CONFIG_FLAGS}
    values["fail_numbers"] = dict(values.pop("fail_number"))
    return SimulatorConfig(
        account_sid=os.environ.get("TWILIO_ACCOUNT_SID") or DEFAULT_ACCOUNT_SID,
        auth_token=os.environ.get("TWILIO_AUTH_TOKEN") or DEFAULT_AUTH_TOKEN,
        **values,
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


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry: `python -m sms_relay.simulator.command`."""
    parser = argparse.ArgumentParser(prog="sms-relay simulator", description=__doc__)
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

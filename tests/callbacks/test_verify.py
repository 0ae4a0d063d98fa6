"""Verify: limits per number and per IP, Twilio's 60202/60203, same answers, approvals recorded."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sms_relay.masking import phone_hash
from sms_relay.settings import Settings
from sms_relay.simulator.server import SimulatorServer
from tests.callbacks.conftest import Callbacks, callbacks_settings, query_rows, running_callbacks
from tests.support import eventually, topic_reader

pytestmark = pytest.mark.integration


@pytest.fixture
async def limited(settings: Settings) -> AsyncIterator[Callbacks]:
    """Small limits: 3 starts per number, 4 per IP, 3 checks per number."""
    small = callbacks_settings(
        settings,
        verify_max_starts_per_number=3,
        verify_max_starts_per_ip=4,
        verify_max_checks_per_number=3,
        callbacks_run_projection=False,
    )
    async with running_callbacks(small) as callbacks:
        yield callbacks


@pytest.fixture
async def roomy(settings: Settings) -> AsyncIterator[Callbacks]:
    """Limits above Twilio's own (5 sends, 5 checks), so Twilio's answers show."""
    large = callbacks_settings(
        settings,
        verify_max_starts_per_number=20,
        verify_max_starts_per_ip=50,
        verify_max_checks_per_number=20,
        callbacks_run_projection=False,
    )
    async with running_callbacks(large) as callbacks:
        yield callbacks


async def start(callbacks: Callbacks, phone: str) -> tuple[int, Any, str]:
    return await callbacks.post_json("/api/verify/start", {"phone": phone})


async def check(callbacks: Callbacks, phone: str, code: str) -> tuple[int, Any, str]:
    return await callbacks.post_json("/api/verify/check", {"phone": phone, "code": code})


async def test_an_approved_check_is_recorded_and_published(
    limited: Callbacks,
    simulator: SimulatorServer,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = limited.settings
    phone = "+12125550171"
    hashed = phone_hash(settings.phone_hash_key.get_secret_value(), phone)
    with topic_reader(settings, settings.kafka.topic_phone_verified) as verified:
        assert await start(limited, phone) == (202, {"status": "pending"}, "")
        code = await simulator.aclient.verification_code(phone)
        assert code is not None
        wrong = "1" if code[0] != "1" else "2"
        assert await check(limited, phone, wrong + code[1:]) == (200, {"status": "rejected"}, "")
        assert await check(limited, phone, code) == (200, {"status": "approved"}, "")
        await eventually(lambda: len(verified.values()) == 1, what="the phone-verified record")
        record, key = verified.values()[0], verified.records[0].key()
    assert key == hashed.encode()
    assert record["phoneHash"] == hashed
    assert record["phone"] == "+*******0171"
    rows = query_rows(database_url, "SELECT phone_hash, phone_masked FROM phone_verifications")
    assert rows == [{"phone_hash": hashed, "phone_masked": "+*******0171"}]
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert code not in logged


async def test_unknown_number_and_wrong_code_get_the_same_answer(
    limited: Callbacks,
) -> None:
    never_started = await check(limited, "+12125550172", "123456")
    await start(limited, "+12125550173")
    wrong_code = await check(limited, "+12125550173", "000000")
    assert never_started == wrong_code == (200, {"status": "rejected"}, "")


async def test_starts_per_number_trip_at_the_configured_count(limited: Callbacks) -> None:
    phone = "+12125550174"
    answers = [await start(limited, phone) for _ in range(4)]
    assert [a[0] for a in answers] == [202, 202, 202, 429]
    _status, body, retry_after = answers[-1]
    assert body["error"] == "rate_limited"
    assert 0 < int(retry_after) <= limited.settings.verify_window_seconds


async def test_starts_per_ip_trip_at_the_configured_count(limited: Callbacks) -> None:
    answers = [await start(limited, f"+1212555018{i}") for i in range(5)]
    assert [a[0] for a in answers] == [202, 202, 202, 202, 429]
    assert int(answers[-1][2]) > 0


async def test_checks_per_number_trip_at_the_configured_count(limited: Callbacks) -> None:
    phone = "+12125550175"
    await start(limited, phone)
    answers = [await check(limited, phone, "000000") for _ in range(4)]
    assert [a[0] for a in answers] == [200, 200, 200, 429]
    assert int(answers[-1][2]) > 0


async def test_twilio_max_send_attempts_is_a_clear_429(roomy: Callbacks) -> None:
    phone = "+12125550176"
    answers = [await start(roomy, phone) for _ in range(6)]
    assert [a[0] for a in answers] == [202] * 5 + [429]
    _status, body, retry_after = answers[-1]
    assert body["error"] == "too_many_sends"
    assert retry_after == "600"


async def test_twilio_max_check_attempts_is_a_clear_429(roomy: Callbacks) -> None:
    phone = "+12125550177"
    await start(roomy, phone)
    answers = [await check(roomy, phone, "000000") for _ in range(6)]
    assert [a[0] for a in answers] == [200] * 5 + [429]
    assert answers[-1][1]["error"] == "too_many_checks"


async def test_invalid_numbers_are_400_and_never_echoed(limited: Callbacks) -> None:
    for phone in ["+15558675310", "12125550123", "+1212555012\uff13"]:
        status, body, _ = await start(limited, phone)
        assert status == 400
        assert body["fields"][0]["field"] == "phone"
        assert phone not in json.dumps(body, ensure_ascii=False)
    status, body, _ = await check(limited, "+12125550178", "12ab")
    assert status == 400
    assert [f["field"] for f in body["fields"]] == ["code"]


async def test_verify_without_a_service_sid_is_503(settings: Settings) -> None:
    twilio = settings.twilio.model_copy(update={"verify_service_sid": None})
    unconfigured = callbacks_settings(settings, twilio=twilio, callbacks_run_projection=False)
    async with running_callbacks(unconfigured) as callbacks:
        status, body, _ = await start(callbacks, "+12125550179")
    assert status == 503
    assert body["error"] == "verify_not_configured"


async def test_limits_hold_across_two_replicas(settings: Settings) -> None:
    """Two callbacks apps on one database share every counter: N replicas are not N x."""
    small = {
        "verify_max_starts_per_number": 3,
        "verify_max_starts_per_ip": 50,
        "verify_max_checks_per_number": 2,
        "callbacks_run_projection": False,
    }
    async with (
        running_callbacks(callbacks_settings(settings, **small)) as first,
        running_callbacks(callbacks_settings(settings, **small)) as second,
    ):
        phone = "+12125550191"
        starts = [await start(replica, phone) for replica in (first, second, first, second)]
        checks = [await check(replica, phone, "000000") for replica in (second, first, second)]
    assert [s[0] for s in starts] == [202, 202, 202, 429]
    assert [c[0] for c in checks] == [200, 200, 429]


async def test_behind_trusted_proxies_ipv6_clients_are_limited_per_64(
    settings: Settings,
) -> None:
    proxied = callbacks_settings(
        settings,
        verify_max_starts_per_ip=2,
        trusted_proxy_hops=1,
        callbacks_run_projection=False,
    )
    async with running_callbacks(proxied) as callbacks:

        async def start_from(address: str, phone: str) -> int:
            # The client's own entry comes first; the proxy appended the address it saw.
            forwarded = f"198.51.100.99, {address}"
            status, _body, _ = await callbacks.post_json(
                "/api/verify/start", {"phone": phone}, **{"X-Forwarded-For": forwarded}
            )
            return status

        same_64 = [await start_from(f"2001:db8:1:2::{n}", f"+1212555019{n}") for n in (2, 3, 4)]
        other_64 = await start_from("2001:db8:1:3::1", "+12125550195")
        forged_away = await start_from("2001:db8:1:2::ffff", "+12125550196")
    assert same_64 == [202, 202, 429]
    assert other_64 == 202
    assert forged_away == 429  # a forged leftmost entry does not buy a new budget

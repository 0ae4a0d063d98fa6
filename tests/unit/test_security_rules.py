"""Destination policy and the security settings: pure rules, one line per bad setting."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from sms_relay.domain.destinations import DestinationPolicy, host_allowed
from sms_relay.errors import ConfigurationError
from sms_relay.kinds.order_shipped import ORDER_SHIPPED
from sms_relay.settings import DestinationSettings, load_settings


def event(**changes: object) -> bytes:
    base = {
        "eventId": "order_1001_shipped_v1",
        "phone": "+12125550123",
        "orderId": "1001",
        "trackingUrl": "https://example.com/track/1001",
        "consentAt": "2026-06-02T09:00:00.000Z",
    }
    return json.dumps({**base, **changes}).encode()


def test_link_hosts_match_exactly_or_by_wildcard_subdomain() -> None:
    allowed = frozenset({"example.com", "*.shop.test"})
    assert host_allowed("example.com", allowed)
    assert host_allowed("EXAMPLE.com.", allowed)
    assert not host_allowed("www.example.com", allowed)
    assert not host_allowed("example.com.evil.test", allowed)
    assert host_allowed("track.shop.test", allowed)
    assert host_allowed("a.b.shop.test", allowed)
    assert not host_allowed("shop.test", allowed)
    assert not host_allowed("evilshop.test", allowed)


def test_the_policy_refuses_with_its_reason_as_the_error_type() -> None:
    refused: list[str] = []
    policy = DestinationPolicy.from_settings(
        DestinationSettings(allowed_countries=("US",), allowed_link_hosts=("example.com",)),
        refused.append,
    )
    kind = ORDER_SHIPPED.configured(destinations=policy)
    assert kind.parse(event()).eventId == "order_1001_shipped_v1"
    for raw, reason, field in [
        (event(phone="+14165550123"), "country_not_allowed", "phone"),
        (event(trackingUrl="https://user@evil.test/x"), "link_host_not_allowed", "trackingUrl"),
    ]:
        with pytest.raises(ValidationError) as error:
            kind.parse(raw)
        (detail,) = error.value.errors()
        assert (detail["type"], detail["loc"]) == (reason, (field,))
        assert "evil" not in str(error.value)
        assert "4165550123" not in str(error.value)
    assert refused == ["country_not_allowed", "link_host_not_allowed"]
    # Unset and `*` allow every country; no tracking link is always fine.
    anywhere = ORDER_SHIPPED.configured(
        destinations=DestinationPolicy.from_settings(
            DestinationSettings(allowed_countries=("*",)), refused.append
        )
    )
    assert anywhere.parse(event(phone="+14165550123", trackingUrl=None)).phone == "+14165550123"


@pytest.mark.parametrize("order_id", ["evil.example", "a/b", "x y", "https:", "1001\n"])
def test_order_ids_outside_the_safe_characters_are_refused(order_id: str) -> None:
    with pytest.raises(ValidationError):
        ORDER_SHIPPED.parse(event(orderId=order_id))


def test_consent_given_as_a_number_is_refused() -> None:
    with pytest.raises(ValidationError):
        ORDER_SHIPPED.parse(event(consentAt=0))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CALLBACKS_TRUST_FORWARDED_FOR": "true"}, "CALLBACKS_TRUST_FORWARDED_FOR: "),
        ({"CALLBACKS_TRUST_FORWARDED_FOR": "true"}, "TRUSTED_PROXY_HOPS=1"),
        ({"SMS_ALLOWED_COUNTRIES": "US,XX"}, "SMS_ALLOWED_COUNTRIES: "),
        ({"TRUSTED_PROXY_HOPS": "-1"}, "TRUSTED_PROXY_HOPS: "),
        ({"PORT": "8080", "INGEST_PORT": "8080"}, "INGEST_PORT must differ from PORT"),
        (
            {"APP_ENV": "production", "PHONE_HASH_KEY": "a-real-secret"},
            "SMS_ALLOWED_COUNTRIES must be set in production",
        ),
    ],
)
def test_bad_security_settings_name_their_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as error:
        load_settings()
    assert message in str(error.value)


def test_production_takes_an_explicit_star_and_country_lists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("PHONE_HASH_KEY", "a-real-secret")
    monkeypatch.setenv("SMS_ALLOWED_COUNTRIES", "*")
    assert load_settings().destinations.allowed_countries == ("*",)
    monkeypatch.setenv("SMS_ALLOWED_COUNTRIES", "us, ca")
    monkeypatch.setenv("SMS_ALLOWED_LINK_HOSTS", "Example.com,*.shop.test")
    loaded = load_settings()
    assert loaded.destinations.allowed_countries == ("US", "CA")
    assert loaded.destinations.allowed_link_hosts == ("example.com", "*.shop.test")

"""Event kinds: templates checked against their model, locales, consent purposes, policies,
SMS_KINDS and the `sms-relay kinds` table."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from cli.main import main
from sms_relay.errors import ConfigurationError
from sms_relay.kinds import registry
from sms_relay.kinds.order_shipped import ORDER_SHIPPED
from sms_relay.kinds.support_ticket_created import (
    SUPPORT_TICKET_CREATED,
    SupportTicketCreatedPolicy,
)
from sms_relay.kinds.templates import Template
from sms_relay.settings import Settings, load_settings


def ticket(**changes: Any) -> bytes:
    event = {
        "eventId": "ticket_5521_created_v1",
        "phone": "+12125550123",
        "ticketId": "5521",
        "consentAt": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
        "consentPurpose": "support",
        **changes,
    }
    return json.dumps({k: v for k, v in event.items() if v is not None}).encode()


def order(**changes: Any) -> bytes:
    event = {
        "eventId": "order_1001_shipped_v1",
        "phone": "+12125550123",
        "orderId": "1001",
        "trackingUrl": "https://example.com/track/1001",
        "consentAt": "2026-06-02T09:00:00.000Z",
        **changes,
    }
    return json.dumps({k: v for k, v in event.items() if v is not None}).encode()


def test_every_kind_of_the_registry_passes_its_template_check() -> None:
    for kind in registry.EVENT_KINDS.values():
        kind.check()
        assert {"en", "de"} <= kind.templates.keys(), kind.name


def test_order_shipped_keeps_its_english_text_exactly() -> None:
    event = ORDER_SHIPPED.parse(order())
    assert ORDER_SHIPPED.render(event) == (
        "Your order 1001 has shipped. Tracking: https://example.com/track/1001"
    )
    bare = ORDER_SHIPPED.parse(order(trackingUrl=None))
    assert ORDER_SHIPPED.render(bare) == "Your order 1001 has shipped."


@pytest.mark.parametrize(
    ("locale", "start"),
    [
        (None, "We received"),
        ("en", "We received"),
        ("de", "Wir haben"),
        ("de-AT", "Wir haben"),
        ("de_CH", "Wir haben"),
        ("fr", "We received"),  # unknown: English
    ],
)
def test_the_locale_picks_the_template_and_falls_back_to_english(
    locale: str | None, start: str
) -> None:
    text = SUPPORT_TICKET_CREATED.render(SUPPORT_TICKET_CREATED.parse(ticket(locale=locale)))
    assert text.startswith(start)
    assert "5521" in text


def test_a_template_naming_no_field_is_a_one_line_error() -> None:
    broken = replace(
        SUPPORT_TICKET_CREATED,
        templates={**SUPPORT_TICKET_CREATED.templates, "de": Template("Ticket {ticketID}.")},
    )
    with pytest.raises(ConfigurationError) as error:
        broken.check()
    message = str(error.value)
    assert message.count("\n") == 0
    assert "support-ticket-created" in message
    assert "de" in message
    assert "{ticketID}" in message


def test_an_optional_field_outside_an_optional_part_is_refused() -> None:
    broken = replace(ORDER_SHIPPED, templates={"en": Template("Track: {trackingUrl}")})
    with pytest.raises(ConfigurationError, match="trackingUrl"):
        broken.check()


def test_a_kind_without_an_english_template_is_refused() -> None:
    broken = replace(ORDER_SHIPPED, templates={"de": ORDER_SHIPPED.templates["de"]})
    with pytest.raises(ConfigurationError, match="default locale"):
        broken.check()


def test_a_served_kind_with_a_broken_template_stops_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = replace(SUPPORT_TICKET_CREATED, templates={"en": Template("{ticket}")})
    monkeypatch.setitem(registry.EVENT_KINDS, broken.name, broken)
    settings = Settings()
    settings.served_kinds()  # not served: not checked
    monkeypatch.setenv("SMS_KINDS", "order-shipped,support-ticket-created")
    with pytest.raises(ConfigurationError, match=r"\{ticket\}"):
        load_settings().served_kinds()


def test_a_ticket_carries_its_number_and_nothing_of_the_ticket() -> None:
    event = SUPPORT_TICKET_CREATED.parse(ticket(subject="My password is hunter2"))
    text = SUPPORT_TICKET_CREATED.render(event)
    assert text == "We received your support request. Your ticket number is 5521."


def test_a_ticket_link_needs_a_host_of_the_kinds_allowlist() -> None:
    with pytest.raises(ValidationError) as error:  # default: no link at all
        SUPPORT_TICKET_CREATED.parse(ticket(link="https://help.example.com/t/5521"))
    (detail,) = error.value.errors()
    assert (detail["type"], detail["loc"]) == ("link_host_not_allowed", ("link",))
    assert "help.example.com" not in str(error.value)

    allowed = SUPPORT_TICKET_CREATED.configured(
        policy=SupportTicketCreatedPolicy(link_hosts=("*.example.com",))
    )
    event = allowed.parse(ticket(link="https://help.example.com/t/5521"))
    assert allowed.render(event).endswith(" Details: https://help.example.com/t/5521")
    with pytest.raises(ValidationError, match="link_host_not_allowed"):
        allowed.parse(ticket(link="https://help.example.com.evil.test/t/5521"))


@pytest.mark.parametrize("ticket_id", ["evil.example", "a/b", "x y", ""])
def test_ticket_ids_outside_the_safe_characters_are_refused(ticket_id: str) -> None:
    with pytest.raises(ValidationError):
        SUPPORT_TICKET_CREATED.parse(ticket(ticketId=ticket_id))


def test_consent_purposes_are_checked_only_for_kinds_that_list_them() -> None:
    assert ORDER_SHIPPED.accepts_purpose(None)
    assert ORDER_SHIPPED.accepts_purpose("marketing")
    assert SUPPORT_TICKET_CREATED.accepts_purpose("support")
    assert not SUPPORT_TICKET_CREATED.accepts_purpose("marketing")
    assert not SUPPORT_TICKET_CREATED.accepts_purpose(None)


def test_consent_source_is_a_label() -> None:
    event = SUPPORT_TICKET_CREATED.parse(ticket(consentSource="checkout:web"))
    assert event.consentSource == "checkout:web"
    with pytest.raises(ValidationError):
        SUPPORT_TICKET_CREATED.parse(ticket(consentSource="Jane Doe <jane@example.com>"))


def test_sms_kinds_selects_the_served_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().sending.kinds == ("order-shipped",)
    monkeypatch.setenv("SMS_KINDS", " support-ticket-created , order-shipped ")
    monkeypatch.setenv("KAFKA_TOPIC_SUPPORT_TICKET_CREATED", "prod.tickets")
    settings = load_settings()
    served = settings.served_kinds()
    assert list(served) == ["support-ticket-created", "order-shipped"]
    assert served["support-ticket-created"].input_topic == "prod.tickets"
    assert settings.kafka.retry_topic("prod.tickets", 2) == "prod.tickets.retry.2"
    assert settings.kafka.dlq_topic("prod.tickets") == "prod.tickets.dlq"


def test_an_unknown_kind_in_sms_kinds_is_a_one_line_error_naming_the_known_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SMS_KINDS", "order-shipped,order-shiped")
    with pytest.raises(ConfigurationError) as error:
        load_settings()
    message = str(error.value)
    assert message.count("\n") == 0
    assert message.startswith("SMS_KINDS: ")
    assert "order-shiped" in message
    assert "known: order-shipped, support-ticket-created" in message


def test_a_bad_policy_setting_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMS_SUPPORT_TICKET_CREATED_LINK_HOSTS", "https://help.example.com/t")
    with pytest.raises(ConfigurationError) as error:
        load_settings()
    message = str(error.value)
    assert message.startswith("SMS_SUPPORT_TICKET_CREATED_LINK_HOSTS: ")
    assert "help.example.com" not in message  # never the value


def test_the_kinds_command_prints_values_and_their_sources(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SMS_SUPPORT_TICKET_CREATED_LINK_HOSTS", "help.example.com")
    monkeypatch.setenv("KAFKA_TOPIC_ORDER_SHIPPED", "prod.orders")
    assert main(["kinds", "--json"]) == 0
    kinds = {kind["kind"]: kind for kind in json.loads(capsys.readouterr().out)}
    assert kinds["order-shipped"]["served"] is True
    assert kinds["order-shipped"]["topic"] == {
        "variable": "KAFKA_TOPIC_ORDER_SHIPPED",
        "value": "prod.orders",
        "source": "env",
    }
    assert kinds["order-shipped"]["dlqTopic"] == "prod.orders.dlq"
    assert kinds["order-shipped"]["policy"] == []
    ticket_kind = kinds["support-ticket-created"]
    assert ticket_kind["served"] is False
    assert ticket_kind["topic"]["source"] == "default"
    assert ticket_kind["consentPurposes"] == ["support", "transactional"]
    assert ticket_kind["policy"] == [
        {
            "variable": "SMS_SUPPORT_TICKET_CREATED_LINK_HOSTS",
            "value": ["help.example.com"],
            "source": "env",
        }
    ]
    assert main(["kinds"]) == 0
    human = capsys.readouterr().out
    assert "SMS_SUPPORT_TICKET_CREATED_LINK_HOSTS  help.example.com" in human
    assert "support-ticket-created (not served)" in human


def test_the_kinds_command_with_an_unknown_kind_fails_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SMS_KINDS", "appointment-reminders")
    assert main(["kinds", "--served"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "unknown kind(s) appointment-reminders" in err

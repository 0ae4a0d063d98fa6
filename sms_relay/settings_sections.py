"""The prefixed sections of the settings: `KAFKA_*`, `TWILIO_*`, `SMS_*`, `SMS_ALLOWED_*`."""

from __future__ import annotations

from typing import Annotated, Literal

import phonenumbers
from pydantic import AnyHttpUrl, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sms_relay.domain.retry import parse_duration, retry_topic
from sms_relay.kinds.kind_settings import KindTopics, topic_field
from sms_relay.kinds.registry import unknown_kinds


def section(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(
        env_prefix=prefix, env_file=".env", extra="ignore", hide_input_in_errors=True
    )


class KafkaSettings(KindTopics):
    """`KAFKA_*`: broker, group and topic names (fresh names per test or environment)."""

    model_config = section("KAFKA_")

    bootstrap_servers: str = Field(default="127.0.0.1:19092", description="Brokers.")
    consumer_group: str = Field(default="sms-relay", description="Consumer group.")
    group_protocol: str = Field(
        default="consumer",
        description="`consumer` (KIP-848: a dead consumer's partitions move within the "
        "brokers' session timeout) or `classic`.",
    )
    topic_order_shipped: str = Field(
        default="order-shipped",
        description="Input topic; the retry tiers (`<topic>.retry.1`, `.retry.2`, ... by "
        "position) and the DLQ (`<topic>.dlq`) are named after it.",
    )
    topic_delivery_status: str = Field(default="delivery-status", description="Status output.")
    topic_phone_verified: str = Field(default="phone-verified", description="Verify output.")
    partitions: int = Field(
        default=6, ge=1, description="Partitions of the topics `sms-relay topics` creates."
    )
    replication_factor: int = Field(
        default=1, ge=1, description="Replication factor of the topics `sms-relay topics` creates."
    )
    group_session_timeout_ms: int | None = Field(
        default=None,
        ge=1,
        description="How soon a dead consumer's partitions move to the others. With "
        "`KAFKA_GROUP_PROTOCOL=consumer` a per-group broker config that `sms-relay topics` "
        "sets (the brokers' `group.consumer.min.session.timeout.ms` must allow it); unset: the "
        "brokers' default (Kafka's 45 s, the local stack's 10 s). The classic protocol takes "
        "it as a client setting.",
    )
    group_heartbeat_interval_ms: int | None = Field(
        default=None,
        ge=1,
        description="The heartbeat interval that goes with it, set the same way (Kafka's "
        "default 5 s, the local stack's 1 s).",
    )

    def topic_of(self, kind: str) -> str:
        """The input topic of `kind` (`KAFKA_TOPIC_<KIND>`)."""
        return str(getattr(self, topic_field(kind)))

    def retry_topic(self, topic: str, position: int) -> str:
        """The input topic's retry tier `position` (1, 2, ...)."""
        return retry_topic(topic, position)

    def dlq_topic(self, topic: str) -> str:
        """The dead-letter topic of the input topic `topic`."""
        return f"{topic}.dlq"


class TwilioSettings(BaseSettings):
    """`TWILIO_*`: the names Twilio's own documentation uses."""

    model_config = section("TWILIO_")

    account_sid: str = Field(
        default="",
        description="Account SID; empty (with the token) runs the local stack against the "
        "simulator.",
    )
    auth_token: SecretStr = Field(
        default=SecretStr(""),
        description="Auth token: signs and checks webhooks; masked in every log line.",
    )
    from_number: str | None = Field(
        default=None,
        description="Sender number; this or `TWILIO_MESSAGING_SERVICE_SID`.",
    )
    messaging_service_sid: str | None = Field(
        default=None, description="Sender as a Messaging Service; this or `TWILIO_FROM_NUMBER`."
    )
    verify_service_sid: str | None = Field(
        default=None, description="Verify service; needed by `/api/verify/*`."
    )
    api_base_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("https://api.twilio.com"),
        description="The simulator (`http://127.0.0.1:8031`) or a regional edge.",
    )
    verify_base_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("https://verify.twilio.com"), description="The same for Verify."
    )
    request_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Our own deadline per Twilio request (the SDK's async client ignores its "
        "timeout).",
    )

    @property
    def configured(self) -> bool:
        return bool(self.account_sid and self.auth_token.get_secret_value())


class SendingSettings(BaseSettings):
    """`SMS_*`: the tuning knobs of the consumer."""

    model_config = section("SMS_")

    concurrency: int = Field(
        default=20, ge=1, description="Twilio requests in flight per consumer process."
    )
    # Twilio queues (and later fails) what exceeds the sender's rate.
    messages_per_second: float = Field(
        default=10.0,
        gt=0,
        description="Sends per second per consumer process: stay under your sender's Twilio "
        "limit divided by the number of consumer processes.",
    )
    max_attempts: int = Field(
        default=3,
        ge=1,
        description="In-process creates for 429s before an event moves to a retry tier (after "
        "a 5xx or a timeout the event is reconciled, never resent in process).",
    )
    backoff_base_seconds: float = Field(
        default=0.5, ge=0, description="Base of the full-jitter exponential backoff after a 429."
    )
    backoff_max_seconds: float = Field(default=8.0, ge=0, description="Its ceiling.")
    retry_tiers: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("30s", "5m", "30m"),
        description="The retry tiers' delays in order (their topics are named by position: "
        "`<topic>.retry.1`, ...); after the last one the event is dead-lettered. A changed "
        "delay applies to records routed after the change.",
    )
    lease_seconds: float = Field(
        default=13.0,
        gt=0,
        description="A claim's lease. A heartbeat renews it while the work runs (every eighth "
        "of it), so a dead or frozen consumer's events move on this long after it stopped. It "
        "must hold one Twilio call: 7/8 x `SMS_LEASE_SECONDS` >= "
        "`TWILIO_REQUEST_TIMEOUT_SECONDS` + 1.",
    )
    settle_seconds: float = Field(
        default=3.0,
        ge=0,
        description="After an uncertain send (5xx, timeout, crash): wait this long from its "
        "end before listing Twilio's messages to find it.",
    )
    reconcile_horizon_seconds: float = Field(
        default=10.0,
        ge=0,
        description='After this long from the uncertain attempt, "not listed" means "not '
        'created" (before it, the event is held and asked about again).',
    )
    in_doubt_resend: Literal["after_horizon", "never"] = Field(
        default="after_horizon",
        description="Not listed after the horizon: `after_horizon` sends again (counted in "
        "`sms_relay_in_doubt_resends_total`, alerted), `never` dead-letters it as "
        "`in_doubt_unresolved`.",
    )
    kinds: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("order-shipped",),
        description="The event kinds this process serves, comma-separated: the consumer "
        "reads each one's topic, the callbacks service ingests each one over HTTP. "
        "`sms-relay kinds` shows them with their topics and policies.",
    )
    batch_size: int = Field(
        default=200, ge=1, description="Records per poll at most; one claim round trip a batch."
    )
    shutdown_grace_seconds: float = Field(
        default=20.0, gt=0, description="On SIGTERM: time to finish and commit the batches in hand."
    )
    scheduler_interval_seconds: float = Field(
        default=1.0, gt=0, description="How often the consumer takes the scheduled sends due."
    )
    stuck_after_seconds: float = Field(
        default=900.0,
        gt=0,
        description="A message not final after this long is polled from Twilio (missing "
        "callbacks).",
    )

    @field_validator("retry_tiers", mode="before")
    @classmethod
    def _split_tiers(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("retry_tiers")
    @classmethod
    def _check_tiers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for tier in value:
            parse_duration(tier)
        return value

    @field_validator("kinds", mode="before")
    @classmethod
    def _split_kinds(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
        return value

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("name at least one kind")
        problem = unknown_kinds(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @property
    def burst(self) -> float:
        """Sends allowed at once after a pause (half a second's worth): the pause between
        two batches is made up without exceeding the rate over any second."""
        return max(1.0, self.messages_per_second / 2)

    def tier_delays(self) -> list[float]:
        return [parse_duration(tier) for tier in self.retry_tiers]


def _split(value: object) -> object:
    """A comma-separated list in the environment; an empty one is unset."""
    if isinstance(value, str):
        parts = tuple(part.strip() for part in value.split(",") if part.strip())
        return parts or None
    return value


class DestinationSettings(BaseSettings):
    """`SMS_ALLOWED_*`: where an SMS may go, enforced for every event whatever its source."""

    model_config = section("SMS_")

    allowed_countries: Annotated[tuple[str, ...] | None, NoDecode] = Field(
        default=None,
        description="ISO 3166 regions an SMS may go to, as `phonenumbers` names them "
        "(`US,CA`), or `*` for all. Unset allows all and warns at start-up; **required in "
        "production**.",
    )
    allowed_link_hosts: Annotated[tuple[str, ...] | None, NoDecode] = Field(
        default=None,
        description="Hosts a `trackingUrl` may point to: `example.com` (that host only), "
        "`*.example.com` (its subdomains). Unset allows any host.",
    )

    @field_validator("allowed_countries", mode="before")
    @classmethod
    def _split_countries(cls, value: object) -> object:
        value = _split(value)
        if isinstance(value, tuple):
            value = tuple(str(code).upper() for code in value)
        return value

    @field_validator("allowed_countries")
    @classmethod
    def _check_countries(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None or value == ("*",):
            return value
        unknown = [code for code in value if code not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(
                f"{', '.join(unknown)}: not ISO 3166 region codes known to phonenumbers "
                "(use e.g. US,CA, or * for all)"
            )
        return value

    @field_validator("allowed_link_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        value = _split(value)
        if isinstance(value, tuple):
            value = tuple(str(host).lower().rstrip(".") for host in value)
        return value

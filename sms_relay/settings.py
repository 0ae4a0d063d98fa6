"""Settings: read once from the environment (and `.env`), validated, passed down."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, Self

import phonenumbers
from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sms_relay.errors import ConfigurationError


class AppEnv(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


def _section(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(
        env_prefix=prefix, env_file=".env", extra="ignore", hide_input_in_errors=True
    )


class KafkaSettings(BaseSettings):
    """`KAFKA_*`: broker, group and topic names (fresh names per test or environment)."""

    model_config = _section("KAFKA_")

    bootstrap_servers: str = "127.0.0.1:19092"
    consumer_group: str = "sms-relay"
    # KIP-848 moves a dead consumer's partitions within the broker's session timeout.
    group_protocol: str = "consumer"
    topic_order_shipped: str = "order-shipped"
    topic_delivery_status: str = "delivery-status"
    topic_phone_verified: str = "phone-verified"
    partitions: int = Field(default=6, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    # How soon a dead member's partitions move. With KIP-848 these are per-group broker
    # configs that `sms-relay topics` sets (unset: the broker's group.consumer.* defaults);
    # the classic protocol takes them as client settings.
    group_session_timeout_ms: int | None = Field(default=None, ge=1)
    group_heartbeat_interval_ms: int | None = Field(default=None, ge=1)

    def retry_topic(self, tier: str) -> str:
        return f"{self.topic_order_shipped}.retry.{tier}"

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic_order_shipped}.dlq"


class TwilioSettings(BaseSettings):
    """`TWILIO_*`: the names Twilio's own documentation uses."""

    model_config = _section("TWILIO_")

    account_sid: str = ""
    auth_token: SecretStr = SecretStr("")
    from_number: str | None = None
    messaging_service_sid: str | None = None
    verify_service_sid: str | None = None
    api_base_url: AnyHttpUrl = AnyHttpUrl("https://api.twilio.com")
    verify_base_url: AnyHttpUrl = AnyHttpUrl("https://verify.twilio.com")
    request_timeout_seconds: float = Field(default=10.0, gt=0)

    @property
    def configured(self) -> bool:
        return bool(self.account_sid and self.auth_token.get_secret_value())


def _parse_duration(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in ("ms", "s", "m", "h"):
        number = text.removesuffix(suffix)
        if number != text and number.replace(".", "", 1).isdigit():
            return float(number) * units[suffix]
    raise ValueError(f"retry tier {text!r} is not a duration like 30s, 5m or 1h")


class SendingSettings(BaseSettings):
    """`SMS_*`: the tuning knobs of the consumer."""

    model_config = _section("SMS_")

    concurrency: int = Field(default=20, ge=1)
    # Twilio queues (and later fails) what exceeds the sender's rate: stay under it.
    messages_per_second: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    backoff_base_seconds: float = Field(default=0.5, ge=0)
    backoff_max_seconds: float = Field(default=8.0, ge=0)
    retry_tiers: Annotated[tuple[str, ...], NoDecode] = ("30s", "5m", "30m")
    # A claim's lease; a heartbeat renews it while its work runs, so it only bounds how
    # long a dead or frozen process keeps its events (it must hold one Twilio call).
    lease_seconds: float = Field(default=13.0, gt=0)
    # After an uncertain send: wait this long before listing Twilio's messages ...
    settle_seconds: float = Field(default=3.0, ge=0)
    # ... and trust a list without a match only this long after the uncertain attempt
    # (before it, the event is asked about again from a retry tier).
    reconcile_horizon_seconds: float = Field(default=10.0, ge=0)
    # No match after the horizon: send again (after_horizon) or dead-letter (never).
    in_doubt_resend: Literal["after_horizon", "never"] = "after_horizon"
    batch_size: int = Field(default=200, ge=1)
    shutdown_grace_seconds: float = Field(default=20.0, gt=0)
    stuck_after_seconds: float = Field(default=900.0, gt=0)

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
            _parse_duration(tier)
        return value

    @property
    def burst(self) -> float:
        """Sends allowed at once after a pause (half a second's worth): the pause between
        two batches is made up without exceeding the rate over any second."""
        return max(1.0, self.messages_per_second / 2)

    def tier_delays(self) -> list[tuple[str, float]]:
        return [(tier, _parse_duration(tier)) for tier in self.retry_tiers]


def _split(value: object) -> object:
    """A comma-separated list in the environment; an empty one is unset."""
    if isinstance(value, str):
        parts = tuple(part.strip() for part in value.split(",") if part.strip())
        return parts or None
    return value


class DestinationSettings(BaseSettings):
    """`SMS_ALLOWED_*`: where an SMS may go, enforced for every event whatever its source."""

    model_config = _section("SMS_")

    # ISO 3166 alpha-2 regions (as `phonenumbers` names them), or `*` for all. Unset allows
    # all and says so at start-up; production requires it to be set.
    allowed_countries: Annotated[tuple[str, ...] | None, NoDecode] = None
    # Hosts a trackingUrl may point to: `example.com` is that host only, `*.example.com`
    # its subdomains. Unset allows any host.
    allowed_link_hosts: Annotated[tuple[str, ...] | None, NoDecode] = None

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


class Settings(BaseSettings):
    """Everything a process needs; sections keep Twilio's and Kafka's familiar names."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", hide_input_in_errors=True)

    app_env: AppEnv = AppEnv.DEVELOPMENT
    database_url: SecretStr = SecretStr(
        "postgresql+psycopg://sms_relay:sms_relay@127.0.0.1:55432/sms_relay"
    )
    public_base_url: AnyHttpUrl = AnyHttpUrl("http://127.0.0.1:8080")
    require_twilio_signature: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    # A second listener for the ingestion routes (`/api/order-shipped-sms`), so that the
    # one facing the internet serves only Twilio's and Verify's. Unset: ingestion is
    # served on PORT too.
    ingest_host: str | None = None
    ingest_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_port: int = Field(default=9101, ge=0, le=65535)
    log_level: str = "INFO"
    # Keys the hash of phone numbers in suppressions and topic keys; rotate with a migration.
    phone_hash_key: SecretStr = SecretStr("dev-only-phone-hash-key")
    verify_max_starts_per_number: int = Field(default=5, ge=1)
    verify_max_starts_per_ip: int = Field(default=20, ge=1)
    verify_max_checks_per_number: int = Field(default=10, ge=1)
    verify_window_seconds: float = Field(default=600.0, gt=0)

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    twilio: TwilioSettings = Field(default_factory=TwilioSettings)
    sending: SendingSettings = Field(default_factory=SendingSettings)
    destinations: DestinationSettings = Field(default_factory=DestinationSettings)

    # Callbacks service (`sms-relay callbacks`).
    # Largest request body accepted (Twilio's forms are a few KiB); larger ones get 413.
    callbacks_max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # How long a webhook waits for the broker's ack before relying on the PostgreSQL outbox.
    callbacks_kafka_deadline_seconds: float = Field(default=2.0, gt=0)
    # librdkafka's message.timeout.ms of the callbacks producer: a record not acknowledged
    # by then has failed for good, so the outbox relay may publish its row without a race.
    callbacks_kafka_message_timeout_seconds: float = Field(default=5.0, gt=0)
    callbacks_relay_interval_seconds: float = Field(default=1.0, gt=0)
    # Published outbox rows are kept this long: they are the seen-token record of redeliveries.
    callbacks_outbox_retention_seconds: float = Field(default=2 * 86400.0, gt=0)
    # How often the missing-callbacks reconciler looks for messages stuck past
    # SMS_STUCK_AFTER_SECONDS.
    callbacks_reconcile_interval_seconds: float = Field(default=60.0, gt=0)
    # Background tasks of the callbacks process; turn off to run them elsewhere.
    callbacks_run_projection: bool = True
    callbacks_run_reconciler: bool = True
    # Proxies in front of the callbacks service that each append the address they saw to
    # X-Forwarded-For; the client IP of the Verify limits is the entry this many from the
    # end. 0: the TCP peer. Counting too many lets clients choose their own IP.
    trusted_proxy_hops: int = Field(default=0, ge=0, le=10)
    # Replaced by TRUSTED_PROXY_HOPS; kept only to refuse it with a clear line.
    callbacks_trust_forwarded_for: str | None = None
    callbacks_help_text: str = "Order updates by SMS. Reply STOP to unsubscribe, START to resume."

    @field_validator("callbacks_trust_forwarded_for")
    @classmethod
    def _replaced(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError(
                "replaced by TRUSTED_PROXY_HOPS: remove it, and set TRUSTED_PROXY_HOPS=1 "
                "where it was true (one proxy that appends X-Forwarded-For)"
            )
        return value

    @model_validator(mode="after")
    def _listeners_differ(self) -> Self:
        if self.ingest_port is not None and self.ingest_port == self.port:
            raise ValueError("INGEST_PORT must differ from PORT")
        return self

    @property
    def ingest_listener(self) -> tuple[str, int] | None:
        """Where ingestion is served when apart from PORT."""
        if self.ingest_port is None:
            return None
        return (self.ingest_host or self.host, self.ingest_port)

    @model_validator(mode="after")
    def _lease_holds_a_call(self) -> Self:
        from sms_relay.delivery.leases import longest_call_fits

        if not longest_call_fits(self.sending.lease_seconds, self.twilio.request_timeout_seconds):
            raise ValueError(
                f"SMS_LEASE_SECONDS={self.sending.lease_seconds:g} cannot hold one Twilio call "
                f"of TWILIO_REQUEST_TIMEOUT_SECONDS={self.twilio.request_timeout_seconds:g} "
                "(a call never starts with less than its deadline + 1 s left, and the lease "
                "is renewed every eighth of its length): raise the lease or lower the timeout"
            )
        return self

    @model_validator(mode="after")
    def _production_rules(self) -> Self:
        if self.app_env is AppEnv.PRODUCTION:
            if not self.require_twilio_signature:
                raise ValueError(
                    "REQUIRE_TWILIO_SIGNATURE=false is refused when APP_ENV=production"
                )
            if self.phone_hash_key.get_secret_value() == "dev-only-phone-hash-key":
                raise ValueError("PHONE_HASH_KEY must be set to a secret value in production")
            if self.destinations.allowed_countries is None:
                raise ValueError(
                    "SMS_ALLOWED_COUNTRIES must be set in production "
                    "(ISO 3166 codes such as US,CA, or * for all)"
                )
        return self

    @property
    def is_production(self) -> bool:
        return self.app_env is AppEnv.PRODUCTION


def load_settings() -> Settings:
    """Read the environment once.

    Raises ConfigurationError with one line per problem and never a value.
    """
    try:
        return Settings()
    except ValidationError as error:
        prefixes = {
            "KafkaSettings": "KAFKA_",
            "TwilioSettings": "TWILIO_",
            "SendingSettings": "SMS_",
            "DestinationSettings": "SMS_",
        }
        prefix = prefixes.get(error.title, "")
        problems = []
        for item in error.errors():
            where = "_".join(str(part) for part in item["loc"]) or "settings"
            problems.append(f"{prefix}{where}".upper() + f": {item['msg']}")
        raise ConfigurationError("; ".join(problems)) from None

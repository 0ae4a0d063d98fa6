"""Settings: read once from the environment (and `.env`), validated, passed down."""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import (
    AnyHttpUrl,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from sms_relay.domain.destinations import ANYWHERE, DestinationPolicy
from sms_relay.domain.lease_rules import longest_call_fits
from sms_relay.errors import ConfigurationError
from sms_relay.kinds.event_kind import EventKind, KindPolicy
from sms_relay.kinds.kind_settings import read_policies
from sms_relay.kinds.registry import EVENT_KINDS, check_kinds
from sms_relay.settings_retention import RetentionSettings
from sms_relay.settings_sections import (
    DestinationSettings,
    KafkaSettings,
    SendingSettings,
    TwilioSettings,
)

__all__ = [
    "AppEnv",
    "DestinationSettings",
    "KafkaSettings",
    "RetentionSettings",
    "SendingSettings",
    "Settings",
    "TwilioSettings",
    "load_settings",
]


class AppEnv(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class Settings(BaseSettings):
    """Everything a process needs; sections keep Twilio's and Kafka's familiar names."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", hide_input_in_errors=True)

    app_env: AppEnv = Field(
        default=AppEnv.DEVELOPMENT,
        description="`production` refuses `REQUIRE_TWILIO_SIGNATURE=false` and the development "
        "`PHONE_HASH_KEY`, and requires `SMS_ALLOWED_COUNTRIES`.",
    )
    database_url: SecretStr = Field(
        default=SecretStr("postgresql+psycopg://sms_relay:sms_relay@127.0.0.1:55432/sms_relay"),
        description="PostgreSQL (psycopg 3); its password is masked in every log line.",
    )
    public_base_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("http://127.0.0.1:8080"),
        description="The URL Twilio calls (behind a TLS proxy: the https URL Twilio sees); "
        "webhook signatures are checked against it.",
    )
    require_twilio_signature: bool = Field(
        default=True,
        description="`false` only for local experiments, with a warning; refused in production.",
    )
    host: str = Field(
        default="127.0.0.1",
        description="Interface the HTTP listeners bind to (`0.0.0.0` inside containers).",
    )
    port: int = Field(
        default=8080,
        ge=1,
        le=65535,
        description="Callbacks service listener (webhooks, Verify, `/metrics`).",
    )
    # Apart from PORT, the internet-facing listener serves only Twilio's and Verify's routes.
    ingest_host: str | None = Field(
        default=None, description="Interface of the ingestion listener; unset: `HOST`."
    )
    ingest_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="A second listener for ingestion (`/api/order-shipped-sms`), kept off the "
        "internet; unset: ingestion is served on `PORT` too.",
    )
    metrics_port: int = Field(
        default=9101, ge=0, le=65535, description="Consumer `/metrics` port; 0 turns it off."
    )
    log_level: str = Field(
        default="INFO",
        description="Level of the JSON logs (numbers, tokens and secrets are masked in every "
        "line).",
    )
    phone_hash_key: SecretStr = Field(
        default=SecretStr("dev-only-phone-hash-key"),
        description="Secret key of the keyed hash that stores phone numbers in suppressions "
        "and topic keys; rotate with a migration.",
    )
    verify_max_starts_per_number: int = Field(
        default=5, ge=1, description="Verify starts per number per window (then 429)."
    )
    verify_max_starts_per_ip: int = Field(
        default=20,
        ge=1,
        description="Verify starts per client network (an IPv4 address or an IPv6 /64) per window.",
    )
    verify_max_checks_per_number: int = Field(
        default=10, ge=1, description="Verify checks per number per window."
    )
    verify_window_seconds: float = Field(
        default=600.0,
        gt=0,
        description="The Verify limits' window (kept in PostgreSQL, shared by every replica).",
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    twilio: TwilioSettings = Field(default_factory=TwilioSettings)
    sending: SendingSettings = Field(default_factory=SendingSettings)
    destinations: DestinationSettings = Field(default_factory=DestinationSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)

    callbacks_max_body_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="Largest webhook body accepted (Twilio's forms are a few KiB); larger: 413.",
    )
    callbacks_kafka_deadline_seconds: float = Field(
        default=2.0,
        gt=0,
        description="A webhook waits this long for Kafka's ack, then relies on the PostgreSQL "
        "outbox.",
    )
    # Past it a record has failed for good, so the relay may publish its row without a race.
    callbacks_kafka_message_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="librdkafka's `message.timeout.ms` of the callbacks producer; the outbox "
        "relay waits past it.",
    )
    callbacks_relay_interval_seconds: float = Field(
        default=1.0,
        gt=0,
        description="How often the outbox relay drains rows taken while Kafka was away.",
    )
    callbacks_outbox_retention_seconds: float = Field(
        default=2 * 86400.0,
        gt=0,
        description="Published outbox rows (the record of callbacks seen) are kept this long.",
    )
    callbacks_reconcile_interval_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How often messages stuck past `SMS_STUCK_AFTER_SECONDS` are polled from "
        "Twilio.",
    )
    callbacks_run_projection: bool = Field(
        default=True,
        description="Run the status projection (`delivery-status` -> PostgreSQL) in this "
        "callbacks process; turn off to run it elsewhere.",
    )
    callbacks_run_reconciler: bool = Field(
        default=True,
        description="Run the missing-callbacks reconciler in this callbacks process.",
    )
    # Counting too many hops lets clients choose their own IP.
    trusted_proxy_hops: int = Field(
        default=0,
        ge=0,
        le=10,
        description="Proxies in front of callbacks that each append to `X-Forwarded-For`; the "
        "Verify client IP is the entry this many from the end (0: the TCP peer).",
    )
    callbacks_trust_forwarded_for: str | None = Field(
        default=None,
        description="**Removed**: start-up stops with a line naming it; set "
        "`TRUSTED_PROXY_HOPS=1` where it was `true`.",
    )
    callbacks_help_text: str = Field(
        default="Order updates by SMS. Reply STOP to unsubscribe, START to resume.",
        description="The answer to HELP and INFO.",
    )

    # Every kind's policy (`SMS_<KIND>_<SETTING>`), read with the rest.
    _kind_policies: dict[str, KindPolicy] = PrivateAttr(default_factory=read_policies)

    def kind_policy(self, kind: str) -> KindPolicy:
        return self._kind_policies[kind]

    def served_kinds(self, destinations: DestinationPolicy = ANYWHERE) -> dict[str, EventKind]:
        """The kinds of `SMS_KINDS`, each with its topic, its policy and `destinations`.

        Raises ConfigurationError (one line) when a template names no field of its model.
        """
        check_kinds(self.sending.kinds)
        return {
            name: EVENT_KINDS[name].configured(
                topic=self.kafka.topic_of(name),
                policy=self.kind_policy(name),
                destinations=destinations,
            )
            for name in self.sending.kinds
        }

    def with_kind_policy(self, kind: str, policy: KindPolicy) -> Settings:
        """A copy with `policy` for `kind` (tests and tools; processes read the environment)."""
        copy = self.model_copy()
        copy._kind_policies = {**self._kind_policies, kind: policy}
        return copy

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

    def retry_topics(self, topic: str) -> list[str]:
        """The retry tiers' topics of the input topic `topic`, in order (`<topic>.retry.1`, ...)."""
        positions = range(1, len(self.sending.retry_tiers) + 1)
        return [self.kafka.retry_topic(topic, position) for position in positions]


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
            "RetentionSettings": "SMS_",
        }
        prefix = prefixes.get(error.title, "")
        problems = []
        for item in error.errors():
            where = "_".join(str(part) for part in item["loc"]) or "settings"
            problems.append(f"{prefix}{where}".upper() + f": {item['msg']}")
        raise ConfigurationError("; ".join(problems)) from None

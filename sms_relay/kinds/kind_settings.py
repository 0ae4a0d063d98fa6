"""The settings every kind brings: its topic (`KAFKA_TOPIC_<KIND>`) and its policy."""

from __future__ import annotations

from pydantic import Field, ValidationError, create_model
from pydantic_settings import BaseSettings

from sms_relay.errors import ConfigurationError
from sms_relay.kinds.event_kind import KindPolicy
from sms_relay.kinds.registry import COMPANION_TOPICS, EVENT_KINDS


def topic_field(kind: str) -> str:
    """The `KafkaSettings` field of a kind's input topic: `KAFKA_TOPIC_<KIND>`."""
    return "topic_" + kind.replace("-", "_")


# `KAFKA_TOPIC_<KIND>` for every kind of the registry, so adding a kind adds its variable.
KindTopics: type[BaseSettings] = create_model(  # type: ignore[call-overload]
    "KindTopics",
    __base__=BaseSettings,
    **{
        topic_field(name): (
            str,
            Field(
                default=name,
                description=f"Input topic of `{name}` events; its retry tiers and DLQ are "
                "named after it.",
            ),
        )
        for name in EVENT_KINDS
    },
    **{
        topic_field(name): (
            str,
            Field(
                default=name, description=f"Input topic of `{name}` events (read with `{kind}`)."
            ),
        )
        for kind, names in COMPANION_TOPICS.items()
        for name in names
    },
)


def read_policies() -> dict[str, KindPolicy]:
    """Every kind's policy from the environment.

    Raises ConfigurationError with one line per problem, naming the variable, never its value.
    """
    policies = {}
    for name, kind in EVENT_KINDS.items():
        try:
            policies[name] = kind.policy_type()
        except ValidationError as error:
            prefix = str(kind.policy_type.model_config.get("env_prefix", ""))
            raise ConfigurationError(
                "; ".join(
                    prefix
                    + "_".join(str(part) for part in item["loc"]).upper()
                    + f": {item['msg']}"
                    for item in error.errors()
                )
            ) from None
    return policies

"""The brokers' KIP-848 group settings (how soon a dead consumer's partitions move) are the
same in scripts/stack, docker-compose.yml and the tests' own Kafka container."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.support import GROUP_BROKER_SETTINGS, ROOT


def test_the_stack_the_compose_file_and_the_test_container_agree() -> None:
    stack = dict(
        re.findall(
            r"^(group\.consumer\.[a-z.]+)=([0-9]+)$", (ROOT / "scripts" / "stack").read_text(), re.M
        )
    )
    compose: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    environment = compose["services"]["kafka"]["environment"]
    composed = {
        name.removeprefix("KAFKA_").lower().replace("_", "."): str(value)
        for name, value in environment.items()
        if name.startswith("KAFKA_GROUP_CONSUMER_")
    }
    assert stack == composed == GROUP_BROKER_SETTINGS

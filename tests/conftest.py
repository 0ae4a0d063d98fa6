"""Fixtures: real Kafka and PostgreSQL (from the environment, testcontainers, or the local
stack), a fresh schema and fresh topic names per test, and the Twilio simulator."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from sms_relay.adapters.kafka import ensure_topics
from sms_relay.migrations import upgrade
from sms_relay.settings import KafkaSettings, SendingSettings, Settings, TwilioSettings
from sms_relay.simulator.config import SimulatorConfig
from sms_relay.simulator.server import SimulatorServer

ROOT = Path(__file__).resolve().parent.parent
TEST_FROM = "+15005550006"


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    docker = shutil.which("docker") or "docker"
    probe = subprocess.run([docker, "info"], capture_output=True, timeout=10, check=False)
    return probe.returncode == 0


def _local_stack_env() -> dict[str, str]:
    """Start Kafka and PostgreSQL from the project's own stack script; read its env file."""
    subprocess.run([str(ROOT / "scripts" / "stack"), "up", "--infra"], check=True)
    env: dict[str, str] = {}
    for line in (ROOT / ".stack" / "env").read_text().splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = shlex.split(value)[0] if value else ""
    return env


@pytest.fixture(scope="session")
def infrastructure() -> Iterator[tuple[str, str]]:
    """(Kafka bootstrap servers, PostgreSQL URL): a missing service fails, never skips."""
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    database = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if bootstrap and database:
        yield bootstrap, database
    elif _docker_answers():
        from testcontainers.kafka import KafkaContainer
        from testcontainers.postgres import PostgresContainer

        with (
            KafkaContainer("apache/kafka:4.1.1") as kafka,
            PostgresContainer("postgres:16", driver="psycopg") as postgres,
        ):
            yield kafka.get_bootstrap_server(), postgres.get_connection_url()
    else:
        env = _local_stack_env()
        yield env["KAFKA_BOOTSTRAP_SERVERS"], env.get("TEST_DATABASE_URL", env["DATABASE_URL"])


@pytest.fixture
def database_url(infrastructure: tuple[str, str]) -> Iterator[str]:
    """A fresh schema with the migrations applied, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    server_url = infrastructure[1]
    admin = create_engine(server_url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in server_url else "?"
    url = f"{server_url}{separator}options=-csearch_path%3D{schema}"
    upgrade(url)
    yield url
    with admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def kafka_settings(infrastructure: tuple[str, str]) -> KafkaSettings:
    """Fresh topic and group names, so tests never see each other's records."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    return KafkaSettings(
        bootstrap_servers=infrastructure[0],
        consumer_group=f"{prefix}-sms-relay",
        topic_order_shipped=f"{prefix}.order-shipped",
        topic_delivery_status=f"{prefix}.delivery-status",
        topic_phone_verified=f"{prefix}.phone-verified",
        partitions=3,
    )


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    return SimulatorConfig(
        account_sid="AC" + uuid.uuid4().hex, auth_token=uuid.uuid4().hex, callback_delay_ms=20
    )


@pytest.fixture
async def simulator(simulator_config: SimulatorConfig) -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(simulator_config) as server:
        yield server


@pytest.fixture
def settings(
    database_url: str, kafka_settings: KafkaSettings, simulator: SimulatorServer
) -> Settings:
    """Settings of one test: its schema, its topics, its simulator; short tiers and waits."""
    sending = SendingSettings(
        retry_tiers=("1s", "2s"),
        lease_seconds=10,
        settle_seconds=0.3,
        backoff_base_seconds=0.05,
        backoff_max_seconds=0.2,
        messages_per_second=200,
        batch_size=100,
    )
    ensure_topics(kafka_settings, sending.retry_tiers)
    config = simulator.config
    return Settings(
        database_url=database_url,
        public_base_url="http://127.0.0.1:8080",
        metrics_port=0,
        kafka=kafka_settings,
        sending=sending,
        twilio=TwilioSettings(
            account_sid=config.account_sid,
            auth_token=config.auth_token,
            from_number=TEST_FROM,
            verify_service_sid="VA" + uuid.uuid4().hex,
            api_base_url=simulator.base_url,
            verify_base_url=simulator.base_url,
            request_timeout_seconds=3,
        ),
    )

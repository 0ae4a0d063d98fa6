"""Fixtures: real Kafka and PostgreSQL (from the environment, testcontainers, or the local
stack), a fresh schema and fresh topic names per test, and the Twilio simulator."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from sms_relay.adapters.kafka.topics import ensure_topics
from sms_relay.settings import KafkaSettings, SendingSettings, Settings, TwilioSettings
from sms_relay.simulator.config import SimulatorConfig
from sms_relay.simulator.server import SimulatorServer
from tests.support import (
    GROUP_BROKER_SETTINGS,
    Figures,
    delete_topics,
    fresh_kafka_settings,
    fresh_schema,
    local_stack_env,
    release_reserved_ports,
    reserved_port,
    wait_for_topics,
)

TEST_FROM = "+15005550006"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """The chaos tests stop and restart the stack's Kafka and PostgreSQL: never beside
    another test. scripts/test runs them in a pass of their own, on one process."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and item.get_closest_marker("chaos") is not None:
        pytest.fail(
            f"a chaos test on one of {workers} parallel workers: run the chaos tests alone "
            "(scripts/test does, after the rest), or deselect them with -m 'not chaos'"
        )


@pytest.fixture
def figures(capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest) -> Figures:
    """Print what the test measured, also from a parallel worker (see Figures)."""
    return Figures(capsys, request.node.user_properties)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The figures the tests printed (`figures`), once more at the end of the run."""
    shown = [
        f"{report.nodeid}\n{value}"
        for outcome in ("passed", "failed")
        for report in terminalreporter.getreports(outcome)
        for name, value in getattr(report, "user_properties", ())
        if name == "figures" and report.when == "call"
    ]
    if shown:
        terminalreporter.section("figures")
        for text in shown:
            terminalreporter.write_line(text)


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    docker = shutil.which("docker") or "docker"
    probe = subprocess.run([docker, "info"], capture_output=True, timeout=10, check=False)
    return probe.returncode == 0


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

        broker = KafkaContainer("apache/kafka:4.1.1")
        for name, value in GROUP_BROKER_SETTINGS.items():
            broker.with_env("KAFKA_" + name.upper().replace(".", "_"), value)
        with (
            broker as kafka,
            PostgresContainer("postgres:16", driver="psycopg") as postgres,
        ):
            yield kafka.get_bootstrap_server(), postgres.get_connection_url()
    else:
        env = local_stack_env()
        yield env["KAFKA_BOOTSTRAP_SERVERS"], env.get("TEST_DATABASE_URL", env["DATABASE_URL"])


@pytest.fixture(autouse=True)
def reserved_ports_released() -> Iterator[None]:
    """The ports a test reserved (`reserved_port()`) are free again once it ends."""
    yield
    release_reserved_ports()


@pytest.fixture
def database_url(infrastructure: tuple[str, str]) -> Iterator[str]:
    """A fresh schema with the migrations' tables, dropped afterwards."""
    with fresh_schema(infrastructure[1]) as url:
        yield url


@pytest.fixture
def migrated_database_url(infrastructure: tuple[str, str]) -> Iterator[str]:
    """A fresh schema built by running the migrations themselves (Alembic)."""
    with fresh_schema(infrastructure[1], run_migrations=True) as url:
        yield url


@pytest.fixture
def kafka_settings(infrastructure: tuple[str, str]) -> Iterator[KafkaSettings]:
    """Fresh topic and group names, so tests never see each other's records; the topics
    are deleted afterwards, so a long-lived broker does not pile up thousands of them."""
    kafka = fresh_kafka_settings(infrastructure[0], partitions=3)
    yield kafka
    delete_topics(kafka)


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
    """Settings of one test: its schema, its topics, its simulator; short tiers and waits.
    Its port (also the public URL the simulator posts callbacks to) is reserved for it:
    nothing listens there unless the test starts the callbacks app on it, and no other
    test, worker or service (a `make up` stack's callbacks on 8080) shares it."""
    sending = SendingSettings(
        retry_tiers=("1s", "2s"),
        lease_seconds=10,
        settle_seconds=0.3,
        reconcile_horizon_seconds=1.0,
        backoff_base_seconds=0.05,
        backoff_max_seconds=0.2,
        messages_per_second=200,
        batch_size=100,
    )
    # In the broker's metadata before the test starts: a topic made a moment ago may not
    # be yet, and the services under test look for it only briefly.
    wait_for_topics(kafka_settings, ensure_topics(kafka_settings, sending.retry_tiers))
    config = simulator.config
    port = reserved_port()
    return Settings(
        database_url=database_url,
        port=port,
        public_base_url=f"http://127.0.0.1:{port}",
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

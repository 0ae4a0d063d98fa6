"""The callbacks process's background jobs: started with the app, stopped with it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from datetime import UTC, datetime
from functools import partial
from typing import Any

from aiohttp import web

from callbacks.app_keys import ENGINE, METRICS, OUTBOX, PRODUCER, SETTINGS, TWILIO_CLIENT
from callbacks.jobs.missing_callbacks import MissingCallbacksReconciler
from callbacks.jobs.projection_runner import ProjectionRunner
from sms_relay.adapters.postgres.callback_outbox import PostgresOutboxRows
from sms_relay.adapters.postgres.engine import AsyncEngine
from sms_relay.adapters.postgres.retention_tables import prunable_tables
from sms_relay.adapters.postgres.status_history import PostgresProjectionStore
from sms_relay.adapters.twilio.sms_sender import fetch_message
from sms_relay.errors import DatabaseUnavailableError
from sms_relay.periodic import every
from sms_relay.retention.pruning import PRUNABLE_STATES, Pruner
from sms_relay.settings import Settings
from sms_relay.status.outbox_relay import OutboxRelay
from sms_relay.status.status_projection import StatusProjection

log = logging.getLogger(__name__)

_STOP_GRACE_SECONDS = 10.0


async def background_jobs(app: web.Application) -> AsyncIterator[None]:
    """The outbox relay and the retention job (every table's pruning), plus the status
    projection and the missing-callbacks reconciler when the settings run them here; a
    crash is logged."""
    settings = app[SETTINGS]
    engine, metrics, outbox = app[ENGINE], app[METRICS], app[OUTBOX]
    message_timeout = settings.callbacks_kafka_message_timeout_seconds
    relay = OutboxRelay(
        PostgresOutboxRows(engine),
        app[PRODUCER],
        metrics,
        grace_seconds=max(message_timeout, settings.callbacks_kafka_deadline_seconds) + 1.0,
        message_timeout_seconds=message_timeout,
        on_published=outbox.kafka_answered,
    )
    stop = asyncio.Event()
    jobs: list[Coroutine[Any, Any, None]] = [
        relay.run(settings.callbacks_relay_interval_seconds, stop),
    ]
    if settings.retention.prune_interval_seconds > 0:
        jobs.append(_prune_tables(settings, engine, stop))
    if settings.callbacks_run_projection:
        runner = ProjectionRunner(
            settings.kafka, StatusProjection(PostgresProjectionStore(engine), metrics)
        )
        jobs.append(runner.run(stop))
    client = app[TWILIO_CLIENT]
    if settings.callbacks_run_reconciler and client is not None:
        reconciler = MissingCallbacksReconciler(
            engine,
            partial(fetch_message, client, settings.twilio),
            outbox,
            metrics,
            topic=settings.kafka.topic_delivery_status,
            stuck_after_seconds=settings.sending.stuck_after_seconds,
        )
        jobs.append(reconciler.run(settings.callbacks_reconcile_interval_seconds, stop))
    tasks = [asyncio.create_task(job) for job in jobs]
    for task in tasks:
        task.add_done_callback(_report_crash)
    yield
    stop.set()
    _done, pending = await asyncio.wait(tasks, timeout=_STOP_GRACE_SECONDS)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _prune_tables(settings: Settings, engine: AsyncEngine, stop: asyncio.Event) -> None:
    """The one retention job: every table's old rows, in small batches. Here, not in the
    consumer: its deletes stay off the claim path's pool and event loop, and replicas may
    all run it (each batch skips the rows another holds)."""
    tables = prunable_tables(engine, sorted(PRUNABLE_STATES))
    pruner = Pruner.for_tables(settings, tables, lambda: datetime.now(UTC))
    await every(
        settings.retention.prune_interval_seconds,
        pruner.prune,
        stop,
        what="retention pruning",
        survives=(DatabaseUnavailableError,),
    )


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task stopped", exc_info=task.exception())

"""Prometheus metrics, one registry per process (a fresh one per test).

Labels stay bounded: never an eventId, a SID or a number.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import Counter as _Counter
from prometheus_client import Histogram as _Histogram
from prometheus_client.metrics import MetricWrapperBase

from sms_relay.domain.segments import SegmentCount
from sms_relay.errors import ProviderError

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_SEGMENT_BUCKETS = (1, 2, 3, 4, 6, 10)
_M = TypeVar("_M", bound=MetricWrapperBase)


class _KnownChildren(MetricWrapperBase):
    """`labels()` answers from a dict of the children made before: prometheus_client
    validates, converts and locks on every call, and the hot paths call it per event."""

    def labels(self: _M, *labelvalues: object, **labelkwargs: object) -> _M:
        known: dict[tuple[object, ...], Any] = self.__dict__.setdefault("_known", {})
        child = known.get(labelvalues) if not labelkwargs else None
        if child is None:
            child = super().labels(*labelvalues, **labelkwargs)
            if not labelkwargs:
                known[labelvalues] = child
        return child

    def remove(self, *labelvalues: Any) -> None:
        self.__dict__.pop("_known", None)
        super().remove(*labelvalues)

    def clear(self) -> None:
        self.__dict__.pop("_known", None)
        super().clear()


class Counter(_KnownChildren, _Counter):
    pass


class Histogram(_KnownChildren, _Histogram):
    pass


class ConsumerMetrics:
    @asynccontextmanager
    async def twilio_call(self, operation: str, ok_status: str) -> AsyncIterator[None]:
        """Count and time one Twilio call by operation, result and HTTP status."""
        started = time.perf_counter()
        result, status = "ok", ok_status
        try:
            yield
        except ProviderError as error:
            result = type(error).__name__.removeprefix("Provider").removesuffix("Error").lower()
            status = str(error.status or 0)
            raise
        finally:
            self.twilio_latency.labels(operation).observe(time.perf_counter() - started)
            self.twilio_requests.labels(operation, result, status).inc()

    def sent(self, kind: str, size: SegmentCount) -> None:
        """Count the segments of one message Twilio accepted."""
        self.segments.labels(kind, size.encoding.value).inc(size.segments)
        self.message_segments.labels(kind).observe(size.segments)

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events_consumed = Counter(
            "sms_relay_events_consumed_total",
            "Records read, by topic",
            ["topic"],
            registry=registry,
        )
        self.outcomes = Counter(
            "sms_relay_outcomes_total",
            "What became of each event: sent, duplicate, rejected, suppressed, failed, "
            "collapsed, expired, retry_scheduled, dead_lettered; and of each offer of a held "
            "record: busy (another live lease), lease_lost (ours ran short), recheck (in "
            "doubt, not listed yet)",
            ["outcome"],
            registry=registry,
        )
        self.twilio_requests = Counter(
            "sms_relay_twilio_requests_total",
            "Twilio API calls by operation, result and HTTP status",
            ["operation", "result", "http_status"],
            registry=registry,
        )
        self.twilio_latency = Histogram(
            "sms_relay_twilio_request_duration_seconds",
            "Twilio API call latency",
            ["operation"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        # What the messages cost: Twilio bills each segment.
        self.segments = Counter(
            "sms_relay_segments_total",
            "Segments of the messages Twilio accepted, by kind and encoding (GSM-7, UCS-2)",
            ["kind", "encoding"],
            registry=registry,
        )
        self.message_segments = Histogram(
            "sms_relay_message_segments",
            "Segments per message Twilio accepted, by kind (above 2: a long text)",
            ["kind"],
            buckets=_SEGMENT_BUCKETS,
            registry=registry,
        )
        self.sends_in_flight = Gauge(
            "sms_relay_sends_in_flight", "Twilio sends under way", registry=registry
        )
        self.in_doubt = Counter(
            "sms_relay_in_doubt_total",
            "Sends whose outcome was unknown, by how reconciliation resolved them: "
            "found, not_yet (nothing listed inside the horizon), not_found (nothing "
            "listed after it), ambiguous, error",
            ["resolution"],
            registry=registry,
        )
        self.collapsed = Counter(
            "sms_relay_collapsed_total",
            "Alerts not sent: a repeat inside its collapse window (repeat_within_window) or "
            "over the number's hourly cap (max_per_hour), by kind and reason",
            ["kind", "reason"],
            registry=registry,
        )
        self.in_doubt_resends = Counter(
            "sms_relay_in_doubt_resends_total",
            "Sends made although an earlier one was in doubt, because Twilio listed no "
            "match after the reconciliation horizon (SMS_IN_DOUBT_RESEND=after_horizon)",
            registry=registry,
        )
        self.account_errors = Counter(
            "sms_relay_twilio_account_errors_total",
            "Creates Twilio refused for our account's or settings' fault (credentials, "
            "sender, geo permissions), by Twilio error code: fix the console, then replay",
            ["code"],
            registry=registry,
        )
        self.lease_renewals = Counter(
            "sms_relay_lease_renewals_total",
            "Claims renewed by the lease heartbeat: renewed, lost (taken over), error",
            ["result"],
            registry=registry,
        )
        self.lease_handoffs = Counter(
            "sms_relay_lease_handoffs_total",
            "Twilio calls not made because the lease would not outlive them; the event "
            "is handed on in doubt",
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "sms_relay_consumer_lag_records",
            "High watermark minus committed offset, per topic and partition",
            ["topic", "partition"],
            registry=registry,
        )
        self.oldest_unprocessed_age = Gauge(
            "sms_relay_oldest_unprocessed_age_seconds",
            "Age of the oldest record fetched but not yet committed",
            registry=registry,
        )
        self.batch_duration = Histogram(
            "sms_relay_batch_duration_seconds",
            "Time to process one polled batch end to end (commit included)",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.paused_partitions = Gauge(
            "sms_relay_paused_partitions",
            "Retry-tier partitions paused until their next record is due",
            registry=registry,
        )
        # Set by consumer.gauges.watch_stuck_claims; the same value on every consumer
        # process (it counts the shared ledger), so rules take max(), not sum().
        self.stuck_sending_claims = Gauge(
            "sms_relay_stuck_sending_claims",
            "Deliveries left in `sending` with an expired lease for longer than "
            "SMS_STUCK_AFTER_SECONDS: Twilio may or may not have the message",
            registry=registry,
        )
        self.unresolved_doubts = Gauge(
            "sms_relay_unresolved_doubts",
            "Deliveries whose earlier send may have created a message that reconciliation "
            "has not matched yet (the ledger's doubt_since is set)",
            registry=registry,
        )


_DELIVERY_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600)


class CallbackMetrics:
    """The callbacks process: webhooks, outbox, projection, reconciler, Verify, HTTP."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.http_requests = Counter(
            "sms_relay_http_requests_total",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=registry,
        )
        self.http_latency = Histogram(
            "sms_relay_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.signature_failures = Counter(
            "sms_relay_signature_failures_total",
            "Webhooks refused for a missing or wrong X-Twilio-Signature",
            ["endpoint"],
            registry=registry,
        )
        self.callbacks = Counter(
            "sms_relay_callbacks_total",
            "Status callbacks by result: published, outboxed, duplicate, published_untracked, "
            "ignored, invalid, unavailable",
            ["result"],
            registry=registry,
        )
        self.unknown_sid = Counter(
            "sms_relay_callbacks_unknown_sid_total",
            "Status records for a message SID / eventId no delivery row knows",
            registry=registry,
        )
        self.outbox_pending = Gauge(
            "sms_relay_outbox_pending_records",
            "Outbox rows not yet published to Kafka",
            registry=registry,
        )
        self.outbox_relayed = Counter(
            "sms_relay_outbox_relayed_total",
            "Outbox rows the relay published to Kafka",
            registry=registry,
        )
        self.kafka_deadline_missed = Counter(
            "sms_relay_kafka_deadline_missed_total",
            "Records Kafka did not acknowledge within the webhook deadline",
            registry=registry,
        )
        self.projected = Counter(
            "sms_relay_projection_records_total",
            "delivery-status records applied to PostgreSQL, by source",
            ["source"],
            registry=registry,
        )
        self.delivery_latency = Histogram(
            "sms_relay_accepted_to_delivered_seconds",
            "Time from Twilio accepting a message to its delivered status",
            buckets=_DELIVERY_BUCKETS,
            registry=registry,
        )
        self.reconciler_checks = Counter(
            "sms_relay_reconciler_checks_total",
            "Stuck messages polled from Twilio, by result: changed, unchanged, error",
            ["result"],
            registry=registry,
        )
        self.inbound = Counter(
            "sms_relay_inbound_messages_total",
            "Inbound SMS by keyword action: opt_out, opt_in, help, other",
            ["action"],
            registry=registry,
        )
        self.verify = Counter(
            "sms_relay_verify_requests_total",
            "Verify requests by operation and result",
            ["operation", "result"],
            registry=registry,
        )
        self.orders = Counter(
            "sms_relay_order_requests_total",
            "POST /api/order-shipped-sms by result: queued, duplicate, invalid, unavailable",
            ["result"],
            registry=registry,
        )


class PolicyMetrics:
    """Events refused by the destination policy (consumer and HTTP ingestion alike)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.refused = Counter(
            "sms_relay_policy_refusals_total",
            "Events refused by SMS_ALLOWED_COUNTRIES / SMS_ALLOWED_LINK_HOSTS, by reason: "
            "country_not_allowed, link_host_not_allowed",
            ["reason"],
            registry=registry,
        )

"""Prometheus metrics, one registry per process (a fresh one per test).

Labels stay bounded: never an eventId, a SID or a number.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ConsumerMetrics:
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
            "retry_scheduled, dead_lettered, busy, lease_lost",
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
        self.sends_in_flight = Gauge(
            "sms_relay_sends_in_flight", "Twilio sends under way", registry=registry
        )
        self.in_doubt = Counter(
            "sms_relay_in_doubt_total",
            "Sends whose outcome was unknown, by how reconciliation resolved them: "
            "found, not_found, ambiguous, error",
            ["resolution"],
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

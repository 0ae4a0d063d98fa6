"""`SMS_*` retention settings: how long each table keeps its rows, and the pruning job."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RetentionSettings(BaseSettings):
    """`SMS_*` retention: how long rows are kept (see docs/data-retention.md)."""

    model_config = SettingsConfigDict(
        env_prefix="SMS_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    ledger_retention_days: float = Field(
        default=90.0,
        gt=0,
        description="The dedupe horizon: settled `deliveries` rows (and their status history) "
        "are deleted this long after their last change, and an `eventId` replayed later is "
        "treated as new. The consumer refuses to start when it is shorter than the "
        "`retention.ms` of the topics it reads.",
    )
    inbound_keywords_retention_days: float = Field(
        default=90.0, gt=0, description="Inbound STOP/START/HELP records are kept this long."
    )
    ingestions_retention_days: float = Field(
        default=90.0, gt=0, description="The audit of HTTP ingestion is kept this long."
    )
    verifications_retention_days: float = Field(
        default=365.0, gt=0, description="Approved Verify checks are kept this long."
    )
    dlq_replays_retention_days: float = Field(
        default=365.0, gt=0, description="The audit of `dlq replay` is kept this long."
    )
    revoked_api_keys_retention_days: float = Field(
        default=365.0,
        gt=0,
        description="A revoked API key is deleted this long after its revocation (live keys "
        "never are).",
    )
    prune_interval_seconds: float = Field(
        default=300.0,
        ge=0,
        description="How often the callbacks process prunes every table; 0 turns the job off "
        "(then run `sms-relay prune` from a scheduler).",
    )
    prune_batch_size: int = Field(
        default=1000,
        ge=1,
        description="Rows deleted per statement (each its own short transaction).",
    )

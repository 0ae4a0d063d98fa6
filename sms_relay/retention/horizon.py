"""The dedupe horizon against the topics' retention: a replay must not outlive the ledger."""

from __future__ import annotations

from collections.abc import Mapping

from sms_relay.errors import ConfigurationError

MS_PER_DAY = 86_400_000


def check_horizon(horizon_days: float, retention_ms: Mapping[str, int | None]) -> list[str]:
    """The warnings for topics whose retention is unknown or infinite (None or -1).

    Raises ConfigurationError when a topic keeps its records longer than the horizon: an
    event still on it could be read again (a reset offset, a replay) after its ledger row
    went, and would be sent twice.
    """
    horizon_ms = horizon_days * MS_PER_DAY
    longer = {t: ms for t, ms in retention_ms.items() if ms is not None and ms > horizon_ms}
    if longer:
        topic, longest = max(longer.items(), key=lambda item: item[1])
        raise ConfigurationError(
            f"SMS_LEDGER_RETENTION_DAYS={horizon_days:g} is shorter than the retention.ms of "
            f"{topic} ({longest / MS_PER_DAY:g} days): raise SMS_LEDGER_RETENTION_DAYS to at "
            f"least {longest / MS_PER_DAY:g}, or lower the topic's retention.ms"
        )
    warnings = []
    for topic, ms in sorted(retention_ms.items()):
        if ms is None:
            warnings.append(
                f"the broker did not report the retention.ms of {topic}: make sure it is at "
                f"most SMS_LEDGER_RETENTION_DAYS={horizon_days:g} days, or an event read "
                "again after that is sent again"
            )
        elif ms < 0:
            warnings.append(
                f"{topic} keeps its records forever (retention.ms=-1): an event replayed from "
                f"it more than SMS_LEDGER_RETENTION_DAYS={horizon_days:g} days after its "
                "delivery settled is treated as new and sent again"
            )
    return warnings

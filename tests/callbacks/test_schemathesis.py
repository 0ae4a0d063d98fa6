"""Schemathesis against openapi.yaml and the running callbacks service: every operation,
positive and negative data, every check (no 5xx, answers as documented).

The test knows the Twilio auth token, so it signs what it sends and the Twilio routes are
exercised past their signature check; ingestion gets a valid API key. Deterministic:
derandomized, no example database, a fixed example budget per operation.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import phonenumbers
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from multidict import MultiDict
from schemathesis import Case

from sms_relay.settings import Settings
from tests.callbacks.conftest import ThreadedCallbacks, callbacks_in_thread, callbacks_settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

# The document's own formats for what JSON Schema cannot say: a number libphonenumber
# holds valid, in the fictional 555-01xx block here (never a real person's number).
schemathesis.openapi.format(
    "past-date-time",
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2025, 12, 31)).map(
        lambda moment: moment.replace(tzinfo=UTC).isoformat()
    ),
)
schemathesis.openapi.format(
    "phone-number",
    st.builds(
        lambda area, line: f"+1{area}55501{line:02d}",
        st.sampled_from(["212", "312", "415", "617", "416"]),
        st.integers(0, 99),
    ).filter(lambda number: phonenumbers.is_valid_number(phonenumbers.parse(number))),
)


@pytest.fixture
def threaded(settings: Settings) -> Iterator[ThreadedCallbacks]:
    roomy = callbacks_settings(
        settings,
        callbacks_run_projection=False,
        callbacks_run_reconciler=False,
        verify_max_starts_per_number=1000,
        verify_max_starts_per_ip=1000,
        verify_max_checks_per_number=1000,
    )
    with callbacks_in_thread(roomy) as running:
        yield running


# What each operation must have answered at least once: the test reached past the
# signature and key checks, into the handlers.
SUCCESS = {
    "/twilio/status-callback": 200,
    "/twilio/inbound": 200,
    "/api/verify/start": 202,
    "/api/verify/check": 200,
    "/api/order-shipped-sms": 202,
    "/healthz": 200,
    "/readyz": 200,
    "/metrics": 200,
}


@pytest.fixture
def answered() -> Iterator[dict[str, set[int]]]:
    seen: dict[str, set[int]] = {}
    yield seen
    for path, statuses in seen.items():
        assert SUCCESS[path] in statuses, (path, sorted(statuses))


@pytest.fixture
def api_key(threaded: ThreadedCallbacks) -> str:
    return threaded.run(threaded.callbacks.new_key("schemathesis", rate_limit=100_000))


# `/api/events/{kind}` is left out: which body is valid depends on the path's kind, and a
# support ticket's link on the configured allowlist, neither of which OpenAPI can say (every
# other operation is generated from the same document; test_kind_ingestion covers this one).
schema = schemathesis.openapi.from_path(ROOT / "openapi.yaml").exclude(path="/api/events/{kind}")


def as_sent(body: dict[str, Any]) -> MultiDict[str]:
    """The form as the HTTP client encodes it: None dropped, lists repeated, all text."""
    form: MultiDict[str] = MultiDict()
    for name, value in body.items():
        for item in value if isinstance(value, list) else [value]:
            if item is not None:
                form.add(name, str(item))
    return form


def credentials(case: Case[Any], threaded: ThreadedCallbacks, api_key: str) -> dict[str, str]:
    """What a legitimate caller sends: Twilio's signature over the exact URL and form,
    or the client's API key."""
    path = case.formatted_path
    if path.startswith("/twilio/") and "X-Twilio-Signature" in (case.headers or {}):
        # A case generated without the header (negative data) goes without it: 403.
        query = urlencode(case.query or {}, doseq=True)
        url = threaded.callbacks.public_base_url + path + (f"?{query}" if query else "")
        form = as_sent(case.body) if isinstance(case.body, dict) else MultiDict()
        return {"X-Twilio-Signature": threaded.callbacks.sign("", form, base=url)}
    if path.startswith("/api/order-shipped-sms"):
        return {"Authorization": f"Bearer {api_key}"}
    return {}


@schema.parametrize()
@settings(
    max_examples=50,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_service_answers_as_its_document_says(
    case: Case[Any], threaded: ThreadedCallbacks, api_key: str, answered: dict[str, set[int]]
) -> None:
    base_url = threaded.callbacks.base_url
    response = case.call_and_validate(
        base_url=base_url, headers=credentials(case, threaded, api_key)
    )
    answered.setdefault(case.operation.path, set()).add(response.status_code)

"""Every integration test is also a log scan: no number, body or secret may appear."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ops.hygiene import captured_logs, leaks, phone_forms

# Every number the integration tests send to, and a fragment of every message body.
NUMBERS = (
    "+12125550123",
    "+12125550142",
    "+15005550001",
    "+15005550004",
    "+15558675310",
    *(f"+121255501{n}" for n in range(50, 70)),  # test_exactly_once's crowds
)
BODY_FRAGMENT = "has shipped"


@pytest.fixture(autouse=True)
def logs_hold_no_personal_data(request: pytest.FixtureRequest) -> Iterator[None]:
    secrets: list[str] = []
    if "simulator_config" in request.fixturenames:
        secrets.append(request.getfixturevalue("simulator_config").auth_token)
    with captured_logs(secrets) as logs:
        yield
    forbidden = [*secrets, BODY_FRAGMENT]
    for number in NUMBERS:
        forbidden.extend(phone_forms(number))
    assert leaks(logs.lines, forbidden) == []

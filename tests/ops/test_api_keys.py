"""`sms-relay api-keys create|list|revoke`, and the keys at work on the ingestion route."""

from __future__ import annotations

import pytest

from sms_relay.settings import Settings
from tests.callbacks.conftest import callbacks_settings, query_rows, running_callbacks
from tests.ops.conftest import Cli
from tests.support import order_event

pytestmark = pytest.mark.integration


async def test_a_key_is_created_shown_once_used_listed_and_revoked(
    cli: Cli, settings: Settings, database_url: str
) -> None:
    created = await cli.run_async(
        "api-keys", "create", "billing-service", "--kinds", "order-shipped", "--json"
    )
    assert created.code == 0, created.err
    assert "not shown again" in created.err
    key, key_id = created.json()["apiKey"], created.json()["keyId"]
    assert key.startswith(f"smsr_{key_id}_")
    assert created.json()["eventKinds"] == ["order-shipped"]

    listed = await cli.run_async("api-keys", "list")
    assert key_id in listed.out
    assert "billing-service" in listed.out
    assert key not in listed.out
    assert key.split("_", 2)[2] not in listed.out
    assert key.split("_", 2)[2] not in str(query_rows(database_url, "SELECT * FROM api_keys"))

    app_settings = callbacks_settings(settings, callbacks_run_projection=False)
    async with running_callbacks(app_settings) as callbacks:
        before = await callbacks.post_event(order_event(), key)
        revoked = await cli.run_async("api-keys", "revoke", key_id)
        after = await callbacks.post_event(order_event(), key)
    assert before[0] == 202
    assert revoked.code == 0
    assert f"revoked key {key_id}" in revoked.out
    assert after[0] == 401
    assert key_id not in (await cli.run_async("api-keys", "list")).out
    assert key_id in (await cli.run_async("api-keys", "list", "--all")).out


def test_unknown_kinds_bad_names_and_unknown_keys_fail_with_one_line(cli: Cli) -> None:
    unknown = cli("api-keys", "create", "shop", "--kinds", "order-shipped,payroll")
    assert unknown.code == 2
    assert "unknown event kind(s) ['payroll']" in unknown.err
    spaced = cli("api-keys", "create", "my shop", "--kinds", "order-shipped")
    assert spaced.code == 2
    assert "client name" in spaced.err
    missing = cli("api-keys", "revoke", "0123456789ab")
    assert missing.code == 1
    assert "no API key with id" in missing.err
    assert len(missing.err.strip().splitlines()) == 1

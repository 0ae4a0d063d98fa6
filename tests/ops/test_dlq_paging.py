"""`dlq list|replay` on a DLQ read in pages: filters while reading, an early stop at the
limit, the end offsets taken at the start, an interrupted replay resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text

from sms_relay.adapters.kafka.headers import decode_headers
from sms_relay.settings import Settings
from tests.ops.conftest import Cli
from tests.ops.helpers import query, seed_dlq
from tests.support import eventually_sync, read_to_end, settings_env

pytestmark = pytest.mark.integration

# Recent: the broker deletes records older than the topic's retention (7 days).
BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def at(i: int) -> int:
    """Record i was dead-lettered i seconds after BASE (epoch ms)."""
    return int((BASE + timedelta(seconds=i)).timestamp() * 1000)


def last_progress(err: str) -> str:
    return err.replace("\r", "\n").strip().splitlines()[-1]


def test_list_reads_in_pages_with_filters_oldest_first(settings: Settings, cli: Cli) -> None:
    reasons = ["retries_exhausted", "invalid_json", "in_doubt_unresolved"]
    ids = seed_dlq(settings.kafka, 120, reason=lambda i: reasons[i % 3], timestamp_ms=at)
    query(
        settings,
        "INSERT INTO deliveries (event_id, event_type, state, phone_hash, phone_masked, "
        "error_code) VALUES (:e, 'order-shipped', 'dead_lettered', 'h', '+*******0123', 21611)",
        e=ids[7],
    )

    def listed(*flags: str) -> list[dict[str, object]]:
        # Pages of 10 and buffers of 10 per partition: the 120 records take 12 pages.
        result = cli("dlq", "list", "--json", "--page-size", "10", *flags)
        assert result.code == 0, result.err
        records: list[dict[str, object]] = result.json()
        return records

    everything = listed()
    assert [r["eventId"] for r in everything] == ids  # merged across 3 partitions by time
    assert len({(r["partition"], r["offset"]) for r in everything}) == 120
    assert {r["partition"] for r in everything} == {0, 1, 2}
    assert (everything[7]["state"], everything[7]["errorCode"]) == ("dead_lettered", 21611)

    assert [r["eventId"] for r in listed("--reason", "invalid_json")] == ids[1::3]
    picked = listed("--event-id", ids[5], "--event-id", ids[99])
    assert [r["eventId"] for r in picked] == [ids[5], ids[99]]
    assert [r["eventId"] for r in listed("--error-code", "21611")] == [ids[7]]
    window = ["--since", (BASE + timedelta(seconds=30)).isoformat()]
    window += ["--until", (BASE + timedelta(seconds=40)).isoformat()]
    assert [r["eventId"] for r in listed(*window)] == ids[30:40]
    reason_in_window = listed(*window, "--reason", "retries_exhausted")
    assert [r["eventId"] for r in reason_in_window] == [ids[i] for i in range(30, 40) if i % 3 == 0]

    human = cli("dlq", "list", "--page-size", "10", "--reason", "in_doubt_unresolved")
    assert human.code == 0
    assert human.out.splitlines()[0].split() == [
        "time", "part/offset", "eventId", "reason", "error", "attempt", "state", "code", "replays",
    ]  # fmt: skip
    assert human.out.count("in_doubt_unresolved") == 40
    dlq = settings.kafka.dlq_topic(settings.kafka.topic_order_shipped)
    assert human.out.strip().endswith(f"40 record(s) on {dlq}")
    assert last_progress(human.err) == "dlq: read 120 of 120 record(s), 40 matched"


def test_list_stops_reading_once_the_limit_is_met(settings: Settings, cli: Cli) -> None:
    ids = seed_dlq(settings.kafka, 300, timestamp_ms=at)

    result = cli("dlq", "list", "--json", "--page-size", "10", "--limit", "5")
    assert result.code == 0, result.err
    assert [r["eventId"] for r in result.json()] == ids[:5]
    # One page of ten examined, not the topic.
    assert last_progress(result.err) == "dlq: read 10 of 300 record(s), 5 matched"

    late = cli("dlq", "list", "--json", "--page-size", "10", "--limit", "2", "--event-id", ids[250])
    assert [r["eventId"] for r in late.json()] == [ids[250]]
    assert last_progress(late.err) == "dlq: read 300 of 300 record(s), 1 matched"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--limit", "0"], "argument --limit: '0' is not a whole number of at least 1"),
        (["--page-size", "x"], "argument --page-size: 'x' is not a whole number of at least 1"),
        (["--reason", "Retries Exhausted"], "is not a dlq-reason"),
        (["--since", "yesterday"], "is not an ISO-8601 time"),
        (["--kind", "fax"], "argument --kind: invalid choice: 'fax'"),
    ],
)
def test_bad_filters_are_refused_by_argparse(
    cli: Cli, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli("dlq", "list", *flags)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_an_empty_time_range_is_refused_with_one_line(cli: Cli) -> None:
    result = cli("dlq", "list", "--since", "2026-06-02T10:00:00Z", "--until", "2026-06-02T09:00Z")
    assert (result.code, result.err.strip()) == (
        2,
        "sms-relay dlq list: --since must be before --until",
    )


def test_resume_refuses_filters_and_unknown_runs(cli: Cli) -> None:
    mixed = cli("dlq", "replay", "--resume", "1", "--reason", "invalid_json", "--again")
    assert mixed.code == 2
    assert "--resume replays with the run's own options: drop --reason, --again" in mixed.err
    unknown = cli("dlq", "replay", "--resume", "424242")
    assert (unknown.code, unknown.err.strip()) == (
        2,
        "sms-relay dlq replay: there is no replay run 424242",
    )


def runs(settings: Settings) -> list[dict[str, object]]:
    return query(settings, "SELECT * FROM dlq_replay_runs ORDER BY id")


@pytest.mark.slow
def test_an_interrupted_replay_resumes_and_replays_each_record_once(
    settings: Settings, cli: Cli, tmp_path: object
) -> None:
    ids = seed_dlq(settings.kafka, 100, timestamp_ms=at)
    blocked = ids[50]
    query(
        settings,
        "INSERT INTO deliveries (event_id, event_type, state, phone_hash, phone_masked) "
        "VALUES (:e, 'order-shipped', 'dead_lettered', 'h', '+*******0123')",
        e=blocked,
    )
    # Hold the ledger row of record 50: the replay stops there, its earlier pages done.
    holder = create_engine(settings.database_url.get_secret_value())
    lock = holder.connect()
    lock.execute(text("SELECT 1 FROM deliveries WHERE event_id = :e FOR UPDATE"), {"e": blocked})
    env = {**os.environ, **settings_env(settings)}
    command = [sys.executable, "-m", "cli.main", "dlq", "replay", "--page-size", "20"]
    replay = subprocess.Popen(
        [*command, "--operator", "bob"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        eventually_sync(
            lambda: [r["replayed"] for r in runs(settings)] == [40],
            timeout=60,
            what="two pages replayed",
        )
        replay.send_signal(signal.SIGINT)
        lock.rollback()
        out, err = replay.communicate(timeout=60)
    finally:
        lock.close()
        holder.dispose()
        if replay.poll() is None:
            replay.kill()
    assert replay.returncode == 130, err
    (run,) = runs(settings)
    assert (run["outcome"], run["finished_at"]) == ("interrupted", None)
    assert 40 < run["replayed"] < 100  # type: ignore[operator]
    assert f"resume with `sms-relay dlq replay --resume {run['id']}`" in err.decode()
    assert f"replayed {run['replayed']} record(s)" in out.decode()

    # The DLQ grows meanwhile: the resumed run still reads to the end offsets of its start.
    seed_dlq(settings.kafka, 10, prefix="late")
    resumed = cli("dlq", "replay", "--resume", str(run["id"]), "--operator", "carol", "--json")
    assert resumed.code == 0, resumed.err
    assert resumed.json()["replayed"] == 100 - run["replayed"]  # type: ignore[operator]
    assert resumed.json()["run"] == run["id"]
    (done,) = runs(settings)
    assert (done["outcome"], done["replayed"], done["operator"]) == ("finished", 100, "carol")
    assert done["finished_at"] is not None

    audit = query(settings, "SELECT * FROM dlq_replays ORDER BY id")
    assert sorted(r["event_id"] for r in audit) == sorted(ids)  # each exactly once
    assert {r["run_id"] for r in audit} == {run["id"]}
    assert {r["operator"] for r in audit} == {"bob", "carol"}
    main_topic = read_to_end(settings, settings.kafka.topic_order_shipped)
    replayed_from = [decode_headers(m)["sms-relay-replayed-from"] for m in main_topic]
    assert len(replayed_from) == len(set(replayed_from)) == 100
    assert query(settings, "SELECT state FROM deliveries") == [{"state": "retry_scheduled"}]
    (traced,) = cli("trace", blocked, "--json").json()["replays"]
    assert (traced["run"], traced["operator"]) == (run["id"], "bob")

    again = cli("dlq", "replay", "--resume", str(run["id"]))
    assert again.code == 2
    assert f"replay run {run['id']} finished at " in again.err
    # A new run: only the records that came later; those of the first run were replayed.
    fresh = cli("dlq", "replay", "--json", "--page-size", "20")
    assert (fresh.json()["replayed"], fresh.json()["skippedAlreadyReplayed"]) == (10, 100)
    assert len(read_to_end(settings, settings.kafka.topic_order_shipped)) == 110


def test_replay_with_a_limit_stops_there_and_audits_its_run(settings: Settings, cli: Cli) -> None:
    ids = seed_dlq(settings.kafka, 60, timestamp_ms=at)

    dry = cli("dlq", "replay", "--dry-run", "--json", "--page-size", "10", "--limit", "7")
    assert [r["eventId"] for r in dry.json()["records"]] == ids[:7]
    assert (dry.json()["wouldReplay"], dry.json()["run"]) == (7, None)
    assert last_progress(dry.err) == "dlq: read 10 of 60 record(s), 7 matched"
    assert runs(settings) == []

    result = cli("dlq", "replay", "--page-size", "10", "--limit", "7", "--operator", "dana")
    assert result.code == 0, result.err
    assert "replayed 7 record(s)" in result.out
    (run,) = runs(settings)
    assert (run["outcome"], run["replayed"], run["matched"], run["operator"]) == (
        "finished",
        7,
        7,
        "dana",
    )
    assert run["options"]["limit"] == 7  # type: ignore[index]
    audit = query(settings, "SELECT event_id, run_id, operator FROM dlq_replays ORDER BY id")
    assert audit == [{"event_id": e, "run_id": run["id"], "operator": "dana"} for e in ids[:7]]
    assert len(read_to_end(settings, settings.kafka.topic_order_shipped)) == 7

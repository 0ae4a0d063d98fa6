"""`make bench`'s report: BENCHMARKS.md and its plots from a results file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report import BEGIN, END, render


def contender(rate: float, cpu: float, p99: float) -> dict[str, Any]:
    return {
        "events": 20_000,
        "events_per_s": rate,
        "cpu_ms_per_event": cpu,
        "peak_rss_mib": 120.0,
        "machine_cores_busy": 1.8,
        "throttled": 0,
        "offered_per_s": 500.0,
        "latency_events": 2500,
        "p50_ms": 60.0,
        "p99_ms": p99,
    }


def results() -> dict[str, Any]:
    return {
        "started": "2026-12-01T20:00:00+00:00",
        "mode": "full",
        "seconds": 1500,
        "machine": {"cpus": 2, "loadavg_before": 0.5, "loadavg_after": 2.5},
        "points": [
            {
                "concurrency": 128,
                "latency_ms": 50,
                "events": 20_000,
                "contenders": {
                    "naive": contender(16.0, 3.0, 70.0),
                    "plain": contender(2000.0, 0.25, 60.0),
                    "sdk": contender(1500.0, 0.4, 65.0),
                    "consumer": contender(1700.0, 0.45, 400.0),
                },
                "ratios": {"d_over_b": 0.85, "d_over_c": 1.133, "d_over_a": 106.25,
                           "cpu_d_over_b": 1.8},
            }
        ],
        "callbacks": {
            "concurrency": 32,
            "ratio": 0.3,
            "bare": {"requests_per_s": 5000.0, "p50_ms": 5.0, "p99_ms": 9.0,
                     "cpu_ms_per_request": 0.1, "statuses": {"204": 40000}},
            "callbacks": {"requests_per_s": 1500.0, "p50_ms": 20.0, "p99_ms": 80.0,
                          "cpu_ms_per_request": 0.6, "statuses": {"200": 12000},
                          "durable": {"outbox_rows": 13000, "outbox_rows_published": 13000,
                                      "records_on_delivery_status": 13000, "answered_2xx": 13000}},
        },
        "backlog": {
            "events": 200_000, "concurrency": 128, "produce_seconds": 3.0, "seconds": 120.0,
            "events_per_s": 1700.0, "peak_rss_mib": 140.0, "rss_first_quarter_mib": 138.0,
            "rss_last_quarter_mib": 139.0, "rate_by_tenth": [1700.0] * 10,
            "series": [[10.0 * n, 138.0, 16_000 * n, 4.0 * n] for n in range(13)],
        },
        "whole_process": {"events": 5_000, "process_cpu_s": 3.5,
                          "process_cpu_ms_per_event": 0.7},
    }  # fmt: skip


def test_report_renders_tables_targets_and_plots_and_keeps_the_prose(tmp_path: Path) -> None:
    target = tmp_path / "BENCHMARKS.md"
    target.write_text(
        f"# Benchmarks\n\nWhat binds, by hand.\n\n{BEGIN}\nold\n{END}\n\nMore prose.\n"
    )
    results_file = tmp_path / "results" / "2026-12-01.json"
    results_file.parent.mkdir()

    render(results(), results_file, tmp_path)

    text = target.read_text()
    assert text.startswith("# Benchmarks\n\nWhat binds, by hand.")
    assert text.endswith(f"{END}\n\nMore prose.\n")
    assert "\nold\n" not in text
    cpu_row = "| CPU per event ≤ 0.35 ms over the backlog (128, 50 ms) | 0.45 ms | **missed** |"
    assert cpu_row in text
    assert "| (d) ≥ 0.9x (b) at 128, 50 ms | 0.85x | **missed** |" in text
    assert "start-up included (a figure, no target) | 0.7 ms (3.5 s) | n/a |" in text
    assert "each tenth of the drain: 1700, 1700" in text
    assert "| CPU per event ≤ 1.5x (b)'s per request | 1.8x (0.25 ms) | **missed** |" in text
    assert "| p99 ≤ 3x latency at half load (128, 50 ms) | 400.0 ms | **missed** |" in text
    assert "| callbacks ≥ 0.5x the bare handler | 0.3x | **missed** |" in text
    assert (
        "| 128 | 50 | (d) sms-relay consumer | 1,700 | 60 / 400 (at 500/s) | 0.450 | 1.80 | 120 |"
        in text
    )
    for image in ("throughput.png", "p99.png", "backlog_rss.png", "backlog_rate.png"):
        assert f"(results/plots/{image})" in text
        assert (tmp_path / "results" / "plots" / image).read_bytes().startswith(b"\x89PNG")


def test_a_partial_run_replaces_only_its_parts_and_the_report_says_so(tmp_path: Path) -> None:
    from bench.__main__ import merged

    earlier = results()
    faults = {
        "rate_429": 0.01,
        "consumer": contender(1650.0, 0.45, 500.0) | {"throttled": 200},
        "fault_free": [1700.0, 1720.0],
        "vs_fault_free": 0.965,
        "middle_vs_fault_free": 0.98,
    }
    later = {"started": "2026-12-02T01:00:00+00:00", "faults": faults}
    combined = merged(earlier, later, ["faults"])
    assert combined["faults"] == faults
    assert combined["points"] == earlier["points"]
    assert combined["rerun"] == {"faults": "2026-12-02T01:00:00+00:00"}

    (tmp_path / "BENCHMARKS.md").write_text(f"# Benchmarks\n\n{BEGIN}\n{END}\n")
    render(combined, tmp_path / "results" / "2026-12-02.json", tmp_path)
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "Part `faults` was run again at 2026-12-02T01:00:00+00:00" in text
    assert (
        "| 1% 429s: ≥ 0.95x the fault-free rate | 0.965x (middle 90% of the creates: 0.98x) | met |"
        in text
    )
    assert "1700.0/s and 1720.0/s" in text


def test_callbacks_are_measured_against_the_minimal_correct_handler(tmp_path: Path) -> None:
    run = results()
    minimal = {
        "requests_per_s": 2000.0,
        "p50_ms": 15.0,
        "p99_ms": 30.0,
        "cpu_ms_per_request": 0.4,
        "statuses": {"204": 20000},
        "requests_per_s_runs": [1900.0, 2100.0],
    }
    two = run["callbacks"]["callbacks"] | {"requests_per_s": 2400.0}
    ratios = {"ratio": 0.75, "ratio_bare": 0.3, "two_over_one": 1.6, "two_over_minimal": 1.2}
    run["callbacks"] |= {"minimal": minimal, "two_processes": two, **ratios}

    text = render(run, tmp_path / "results" / "2026-12-01.json", tmp_path).read_text()

    assert "| callbacks ≥ 0.8x (e) at 32 in flight | 0.75x | **missed** |" in text
    assert "| (e) minimal correct handler | 2,000 | 15.0 / 30.0 | 0.4 | 204: 20000 |" in text
    assert "| sms-relay callbacks, two processes | 2,400 |" in text
    assert "Ratio **0.75x** (e)" in text
    assert "1,900 and 2,100/s" in text
    assert "two processes 1.6x one (1.2x (e))" in text

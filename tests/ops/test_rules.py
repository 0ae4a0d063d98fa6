"""The Prometheus rules and the Grafana dashboard use only metrics the code exports,
and the rules pass promtool (required in CI)."""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

import sms_relay.metrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "rules_test.yml"
SCRAPE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "sms-relay.json"

_METRIC = re.compile(r"(?<![\w:])sms_relay_[a-z0-9_]+")
_RECORDED = re.compile(r"(?<![\w:])sms_relay:[a-z0-9_:]+")
# The series each metric type exposes (prometheus_client strips `_total` from the family).
_SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}


def metric_classes() -> list[type]:
    """Every class in sms_relay.metrics whose __init__ takes a registry (CallbackMetrics,
    ConsumerMetrics, and whatever comes next)."""
    return [
        cls
        for _, cls in inspect.getmembers(sms_relay.metrics, inspect.isclass)
        if cls.__module__ == sms_relay.metrics.__name__
        and cls.__name__.endswith("Metrics")  # not the Counter/Histogram wrappers
        and "registry" in inspect.signature(cls.__init__).parameters
    ]


def exported_names() -> set[str]:
    """Sample names every metric class exports, each in a fresh registry."""
    names: set[str] = set()
    for cls in metric_classes():
        registry = CollectorRegistry()
        cls(registry)
        for family in registry.collect():
            names.update(family.name + suffix for suffix in _SERIES_SUFFIXES[family.type])
    return names


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def test_the_metric_classes_are_found() -> None:
    assert {cls.__name__ for cls in metric_classes()} >= {"ConsumerMetrics"}


def test_every_metric_in_the_rules_exists() -> None:
    used = set(_METRIC.findall(RULES.read_text()))
    assert used, "no metric found in the rules: the pattern is wrong"
    assert sorted(used - exported_names()) == []


def test_every_metric_on_the_dashboard_exists() -> None:
    used = {name for expr in dashboard_expressions() for name in _METRIC.findall(expr)}
    assert used
    assert sorted(used - exported_names()) == []


def test_every_recording_rule_used_is_defined() -> None:
    text = RULES.read_text()
    defined = set(re.findall(r"^\s*- record:\s*(\S+)\s*$", text, re.MULTILINE))
    used = set(_RECORDED.findall(text)) | {
        name for expr in dashboard_expressions() for name in _RECORDED.findall(expr)
    }
    assert sorted(used - defined) == []


def test_the_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}"


def _promtool() -> str | None:
    found = shutil.which("promtool")
    if found is None and os.environ.get("CI"):
        pytest.fail("promtool is required in CI: apt-get install prometheus")
    if found is None:
        pytest.skip("promtool is not installed (apt-get install prometheus); CI requires it")
    return found


def test_promtool_checks_the_rules() -> None:
    promtool = _promtool()
    result = subprocess.run(
        [str(promtool), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    promtool = _promtool()
    result = subprocess.run(
        [str(promtool), "test", "rules", str(RULES_TEST)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_the_scrape_config(tmp_path: Path) -> None:
    promtool = _promtool()
    # The config names the rules where the container mounts them; check it beside a copy.
    config = SCRAPE_CONFIG.read_text().replace("/etc/prometheus/rules.yml", "rules.yml")
    (tmp_path / "prometheus.yml").write_text(config)
    shutil.copy(RULES, tmp_path / "rules.yml")
    result = subprocess.run(
        [str(promtool), "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr

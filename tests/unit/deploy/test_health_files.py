"""deploy/grafana/dashboard.json and deploy/prometheus/alerts.yml name only metrics the code
exports, cover what docs/deploy.md promises, and pass `promtool check rules` (and the rule
tests in deploy/prometheus/alerts_test.yml)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from collector.metrics import EmitterMetrics, IngestMetrics
from processors.sinks.kafka_sink import SinkCounters
from processors.sinks.metrics import SinkMetrics
from processors.worker.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboard.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
#: A metric name in PromQL (ours all start so; functions and labels never do).
METRIC = re.compile(r"\btelemetry_[a-z0-9_]+\b")
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}


class _WorkerCounters:
    fenced = 0
    reread = 0


def exported_names() -> set[str]:
    """Every series name the worker, the sink, the emitter and the HTTP ingest export."""
    worker = WorkerMetrics()
    worker.watch(_WorkerCounters())
    sink = SinkMetrics()
    sink.watch(SinkCounters())
    emitter = EmitterMetrics()
    ingest: CollectorRegistry = CollectorRegistry()
    IngestMetrics(ingest)
    names = set()
    for registry in (worker.registry, sink.registry, emitter.registry, ingest):
        for family in registry.collect():
            names.update(family.name + s for s in _SUFFIXES[family.type])
    return names


def panel_exprs(panels: list[dict[str, Any]]) -> list[tuple[str, str]]:
    out = []
    for panel in panels:
        out.extend(panel_exprs(panel.get("panels", [])))  # a row's panels
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_the_exported_names_are_found() -> None:
    names = exported_names()
    assert "telemetry_worker_lag" in names
    assert "telemetry_worker_events_folded_total" in names
    assert "telemetry_sink_rows_written_total" in names
    assert "telemetry_emitter_spool_bytes" in names


def test_every_dashboard_query_names_only_exported_metrics() -> None:
    names = exported_names()
    exprs = panel_exprs(json.loads(DASHBOARD.read_text())["panels"])
    assert exprs
    for title, expr in exprs:
        used = set(METRIC.findall(expr))
        assert used, f"panel {title!r}: {expr!r} names no telemetry metric"
        assert used <= names, f"panel {title!r} names {sorted(used - names)}, not exported"


def test_every_alert_names_only_exported_metrics() -> None:
    names = exported_names()
    for rule in alert_rules():
        used = set(METRIC.findall(rule["expr"]))
        assert used, f"alert {rule['alert']} names no telemetry metric"
        assert used <= names, f"alert {rule['alert']} names {sorted(used - names)}, not exported"


def test_the_alerts_cover_what_the_docs_promise() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    # lag growing, stats older than 3 intervals, a partition that stops folding,
    # the DLQ rate, a spool filling
    assert "telemetry_worker_lag" in exprs["TelemetryWorkerLagGrowing"]
    assert "3 * telemetry_worker_stats_interval_seconds" in exprs["TelemetryStatsNotPublished"]
    assert "telemetry_sink_stats_as_of_timestamp_seconds" in exprs["TelemetryStoredStatsStale"]
    assert "telemetry_worker_partitions_stuck" in exprs["TelemetryPartitionStuck"]
    assert 'table="rejected"' in exprs["TelemetryDeadLetterRate"]
    assert "telemetry_emitter_spool_bytes" in exprs["TelemetrySpoolFilling"]


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set and promtool is missing (.ci/run installs it)", pytrace=False)
        pytest.skip("promtool not installed (Debian: the prometheus package)")
    return found


def test_promtool_checks_the_rules() -> None:
    out = subprocess.run(
        [_promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_runs_the_rule_tests() -> None:
    out = subprocess.run(
        [_promtool(), "test", "rules", str(ALERT_TESTS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr

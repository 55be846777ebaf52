"""The monitoring files an operator loads: alert rules, scrape configs, Grafana dashboard.

promtool validates the rules and configs and runs the rules' unit tests; the dashboard must be
importable as it is, and every metric the dashboard and the alerts query must be one that
docs/metrics.md lists (or a Prometheus built-in named here).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.prometheus import promtool

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "cluster" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "alerts.test.yml"
SCRAPE_CONFIGS = ("prometheus.local.yml", "prometheus.cluster.yml")
DASHBOARD = ROOT / "cluster" / "grafana" / "ymera-dashboard.json"
CATALOGUE = ROOT / "docs" / "metrics.md"
EXPECTED_ALERTS = {"YmeraOrchestratorMetricsDown", "YmeraAgentTypeFailing",
                   "YmeraDeadLettersGrowing", "YmeraQueueBacklogGrowing",
                   "YmeraReplicasBelowDesired", "YmeraApiLatencyHigh", "YmeraNoConfidentRouteHigh",
                   "YmeraWorkflowRunsOverdue", "YmeraLlmDeploymentDown"}
BUILT_IN_METRICS = {"up"}
"""Metrics the files may use that docs/metrics.md does not list: Prometheus's own."""

_CATALOGUE_ROW = re.compile(
    r"^\|\s*`([a-zA-Z_:][a-zA-Z0-9_:]*)`\s*\|\s*(counter|gauge|histogram)\s*\|", re.MULTILINE)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_SELECTED_NAME = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?=[{\[)])")
_LABEL_VALUES = re.compile(r"label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)")


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers followed by `{`, `[` or `)`,
    once strings and label lists (`by (...)`, `on (...)`, ...) are taken out."""
    expr = _LABEL_LIST.sub(" ", _STRING.sub('""', expr))
    return set(_SELECTED_NAME.findall(expr))


def documented_metrics() -> set[str]:
    """The scraped names docs/metrics.md lists, with `_bucket`/`_sum`/`_count` for histograms."""
    names = set()
    for name, kind in _CATALOGUE_ROW.findall(CATALOGUE.read_text()):
        names.add(name)
        if kind == "histogram":
            names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
    return names


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    panels = []
    for panel in dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in dashboard_panels() for target in panel.get("targets", [])]


def dashboard_variable_queries() -> list[str]:
    queries = []
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


def test_alert_rules_are_valid() -> None:
    result = run_promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in result.stdout
    assert {rule["alert"] for rule in alert_rules()} == EXPECTED_ALERTS


def test_alert_rules_pass_their_unit_tests() -> None:
    result = run_promtool("test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_says_how_bad_and_what_happened() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]
        assert rule.get("for"), rule["alert"]


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    fired = {case["alertname"] for case in cases if case.get("exp_alerts")}
    silent = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert fired == EXPECTED_ALERTS
    assert silent == EXPECTED_ALERTS


@pytest.mark.parametrize("config", SCRAPE_CONFIGS)
def test_scrape_config_is_valid(config: str) -> None:
    result = run_promtool("check", "config", str(PROMETHEUS_DIR / config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


@pytest.mark.parametrize("config", SCRAPE_CONFIGS)
def test_scrape_config_has_the_ymera_and_ray_jobs(config: str) -> None:
    loaded = yaml.safe_load((PROMETHEUS_DIR / config).read_text())
    jobs = {job["job_name"] for job in loaded["scrape_configs"]}
    assert jobs == {"ymera", "ray"}
    assert loaded["rule_files"] == ["alerts.yml"]


def test_dashboard_is_importable() -> None:
    board = dashboard()
    assert board["title"] and board["uid"]
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"agent_type", "tenant", "workflow"} <= variables.keys()
    panels = dashboard_panels()
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys(), panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["refId"], panel["title"]
    assert sum(panel["type"] != "row" for panel in panels) >= 17


def test_metric_names_are_parsed_from_promql() -> None:
    expr = ('histogram_quantile(0.95, sum by (le, route) (rate(ray_ymera_api_request_duration_'
            'seconds_bucket{route!~".*/stream)"}[5m]))) / sum(ymera_dead_letters) or vector(0)')
    assert metric_names(expr) == {"ray_ymera_api_request_duration_seconds_bucket",
                                  "ymera_dead_letters"}


def test_dashboard_and_alerts_use_only_catalogued_metrics() -> None:
    documented = documented_metrics()
    assert "ymera_queue_depth" in documented
    assert "ray_ymera_api_request_duration_seconds_bucket" in documented
    allowed = documented | BUILT_IN_METRICS
    used = {name: source
            for source, exprs in (("dashboard", dashboard_exprs()),
                                  ("alerts.yml", [rule["expr"] for rule in alert_rules()]))
            for expr in exprs for name in metric_names(expr)}
    for query in dashboard_variable_queries():
        used.update({name: "dashboard variable" for name in _LABEL_VALUES.findall(query)})
    assert len(used) >= 15
    unknown = {name: source for name, source in used.items() if name not in allowed}
    assert not unknown, f"not in docs/metrics.md: {unknown}"


def test_the_dashboard_shows_every_workflow_metric_in_its_workflows_row() -> None:
    catalogued = {name for name, _ in _CATALOGUE_ROW.findall(CATALOGUE.read_text())
                  if name.startswith("ymera_workflow_")}
    assert len(catalogued) == 7
    panels = dashboard()["panels"]
    row = next(i for i, panel in enumerate(panels) if panel["title"] == "Workflows")
    following = panels[row + 1:]
    end = next((i for i, panel in enumerate(following) if panel["type"] == "row"),
               len(following))
    exprs = [target["expr"] for panel in following[:end] for target in panel["targets"]]
    shown = {name.removesuffix("_bucket") for expr in exprs for name in metric_names(expr)}
    assert shown == catalogued
    assert any("histogram_quantile(0.95" in e and "step_wait" in e for e in exprs)
    assert any("histogram_quantile(0.5," in e and "step_wait" in e for e in exprs)

"""A real Prometheus accepts every query of the Grafana dashboard and of the alert rules.

Grafana's variables are replaced the way Grafana would before sending a query: the selected
"All" values by `.*`, `$__rate_interval` and `$__interval` by a duration, `$__range` by the range.
A query Prometheus cannot parse comes back as HTTP 400, status "error", errorType "bad_data".
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.cluster.test_alert_rules import alert_rules, dashboard_panels
from tests.support.prometheus import PrometheusServer, prometheus_server

GRAFANA_BUILT_INS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def as_grafana_sends_it(expr: str) -> str:
    for variable, value in GRAFANA_BUILT_INS.items():
        expr = expr.replace(variable, value)
    return _VARIABLE.sub(".*", expr)


DASHBOARD_QUERIES = [
    pytest.param(as_grafana_sends_it(target["expr"]), id=f"{panel['title']}/{target['refId']}")
    for panel in dashboard_panels() for target in panel.get("targets", [])
]
ALERT_QUERIES = [pytest.param(rule["expr"], id=rule["alert"]) for rule in alert_rules()]


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusServer]:
    with prometheus_server() as server:
        yield server


def test_variables_are_replaced_as_grafana_does() -> None:
    assert as_grafana_sends_it(
        'sum(rate(x{agent_type=~"$agent_type", tenant=~"${tenant}"}[$__rate_interval]))'
    ) == 'sum(rate(x{agent_type=~".*", tenant=~".*"}[1m]))'


def test_prometheus_rejects_a_broken_query(prometheus: PrometheusServer) -> None:
    body = prometheus.query_response("sum by (agent_type) (rate(ymera_tasks_finished_total[5m])")
    assert body["status"] == "error"
    assert body["errorType"] == "bad_data"


@pytest.mark.parametrize("expr", DASHBOARD_QUERIES)
def test_dashboard_query_is_accepted(prometheus: PrometheusServer, expr: str) -> None:
    assert "$" not in expr
    body = prometheus.query_response(expr)
    assert body["status"] == "success", f"{expr}: {body}"


@pytest.mark.parametrize("expr", ALERT_QUERIES)
def test_alert_query_is_accepted(prometheus: PrometheusServer, expr: str) -> None:
    body = prometheus.query_response(expr)
    assert body["status"] == "success", f"{expr}: {body}"

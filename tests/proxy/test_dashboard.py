"""The Grafana dashboard queries only what a running sidecar's `/metrics` really exposes.

A renamed metric or label makes a dashboard panel silently empty, which an SRE notices only
during an incident. So the dashboard's PromQL is checked against a live scrape taken after
traffic that exercises every metric: plain and streamed calls, a failover and an ejection,
on a route with a budget.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from llmroute_proxy.sim import Fault, FaultKind
from tests.proxy.documents import edited
from tests.proxy.stack import DOCUMENTS, Stack

DASHBOARD = Path(__file__).parents[2] / "charts" / "llmroute" / "dashboards" / "llmroute.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]

REQUIRED_METRICS = {
    "llmroute_requests_total", "llmroute_request_duration_seconds_bucket", "llmroute_attempts_total",
    "llmroute_failovers_total", "gen_ai_client_operation_duration_seconds_bucket",
    "gen_ai_client_operation_time_to_first_chunk_seconds_bucket", "gen_ai_client_token_usage_sum",
    "llmroute_cost_usd_total", "llmroute_budget_spent_usd", "llmroute_budget_remaining_usd",
    "llmroute_circuit_state", "llmroute_requests_in_flight", "llmroute_ejections_total", "llmroute_table_info",
}
"""What the dashboard must chart: traffic, failover, latency, tokens, cost, budgets and circuits."""

GRAFANA_VARIABLES = frozenset({"__rate_interval", "__interval", "__range", "__range_s", "__interval_ms"})
PANEL_TYPES = frozenset({"timeseries", "stat", "gauge", "bargauge", "table", "state-timeline",
                         "status-history", "piechart", "barchart", "heatmap", "text"})

PROMQL_WORDS = frozenset({
    # aggregations and keywords
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values",
    "group", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
    "offset", "inf", "nan",
    # functions
    "abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "day_of_month",
    "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp", "floor", "histogram_quantile",
    "holt_winters", "hour", "idelta", "increase", "irate", "label_join", "label_replace", "ln", "log2", "log10",
    "minute", "month", "predict_linear", "rate", "resets", "round", "scalar", "sgn", "sort", "sort_desc", "sqrt",
    "time", "timestamp", "vector", "year", "avg_over_time", "min_over_time", "max_over_time", "sum_over_time",
    "count_over_time", "quantile_over_time", "stddev_over_time", "stdvar_over_time", "last_over_time",
    "present_over_time",
})

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENTIFIER = re.compile(r"(?<![\w$.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(.+?)\s*,\s*(\w+)\s*\)\s*$")
_LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def _without_strings(expr: str) -> str:
    return _STRING.sub('""', expr)


def metric_names(expr: str) -> set[str]:
    """Series names a PromQL expression selects: identifiers that are no function, keyword or label."""
    bare = _without_strings(expr)
    bare = _GROUPING.sub(" ", bare)
    bare = _SELECTOR.sub(lambda m: (m[1] or "") + " ", bare)
    bare = _RANGE.sub(" ", _VARIABLE.sub(" ", bare))
    return {name for name in _IDENTIFIER.findall(bare) if name.lower() not in PROMQL_WORDS}


def selector_labels(expr: str) -> set[tuple[str, str]]:
    """(metric, label) for every label matcher written inside a `metric{...}` selector."""
    return {(m[1], label) for m in _SELECTOR.finditer(_without_strings(expr)) if m[1]
            for label in _MATCHER.findall(m[2])}


def grouping_labels(expr: str) -> set[str]:
    """Labels named in `by (...)` and `without (...)`."""
    return {label.strip() for m in _GROUPING.finditer(_without_strings(expr)) if m[1] in ("by", "without")
            for label in m[2].split(",") if label.strip()}


def variables(expr: str) -> set[str]:
    return {braced or plain for braced, plain in _VARIABLE.findall(expr)}


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (le, llmroute_target) (rate(x_bucket{a=~"$t", b!="y"}[$__rate_interval]))', {"x_bucket"}),
    ("histogram_quantile(0.95, sum by (le) (rate(a_seconds_bucket[5m])))", {"a_seconds_bucket"}),
    ('max by (t) (m{state="cooling"} * 1 or m{state="probing"} * 2)', {"m"}),
    ("count(up == 1) or vector(0)", {"up"}),
    ("a / on(instance) group_left(version) b offset 1h", {"a", "b"}),
    ("sum(rate(foo_total[1m])) * 3600 > bool 1e3", {"foo_total"}),
    ('label_replace(c, "dst", "$1", "src", "(.*)")', {"c"}),
    ("sort_desc(sum without (pod) (increase(d:rate5m[$__range])))", {"d:rate5m"}),
], ids=lambda value: value if isinstance(value, str) else "")
def test_the_query_tokenizer_finds_exactly_the_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_the_label_readers_find_matchers_and_grouping_labels() -> None:
    expr = 'sum by (le, t) (rate(x_bucket{a=~"$t", b!="{y}"}[5m])) / ignoring(z) sum without (p) (y{c="1"})'
    assert selector_labels(expr) == {("x_bucket", "a"), ("x_bucket", "b"), ("y", "c")}
    assert grouping_labels(expr) == {"le", "t", "p"}
    assert variables('x{a=~"$route", b="${target}"}[$__rate_interval]') == {"route", "target", "__rate_interval"}


@cache
def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def queries() -> list[tuple[str, str, str]]:
    """(where, PromQL expression, legend) for every panel target and every query variable."""
    found = [(f"panel '{p['title']}' {t['refId']}", t["expr"], t.get("legendFormat", ""))
             for p in panels() for t in p["targets"]]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            match = _LABEL_VALUES.match(variable["definition"])
            assert match, f"variable {variable['name']}: expected label_values(metric, label)"
            found.append((f"variable ${variable['name']}", match[1], "{{" + match[2] + "}}"))
    return found


def test_the_dashboard_is_an_importable_grafana_dashboard() -> None:
    board = dashboard()
    assert board["title"] and board["uid"] and 36 <= board["schemaVersion"] <= 41
    datasource = [v for v in board["templating"]["list"] if v["name"] == "datasource"]
    assert datasource == [{**datasource[0], "type": "datasource", "query": "prometheus"}]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


def test_every_panel_queries_the_datasource_variable_with_at_least_one_target() -> None:
    assert len(panels()) >= 10
    for panel in panels():
        assert panel["type"] in PANEL_TYPES, panel["title"]
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE and target["expr"].strip(), panel["title"]


def test_panels_fit_the_24_column_grid_without_overlapping() -> None:
    boxes = [(p["title"], p["gridPos"]) for p in dashboard()["panels"]]
    for title, box in boxes:
        assert box["x"] >= 0 and box["w"] > 0 and box["x"] + box["w"] <= 24, title
    for i, (title, a) in enumerate(boxes):
        for other, b in boxes[i + 1:]:
            apart = (a["x"] + a["w"] <= b["x"] or b["x"] + b["w"] <= a["x"]
                     or a["y"] + a["h"] <= b["y"] or b["y"] + b["h"] <= a["y"])
            assert apart, f"{title!r} overlaps {other!r}"


def test_every_variable_a_query_uses_is_defined() -> None:
    defined = {v["name"] for v in dashboard()["templating"]["list"]} | GRAFANA_VARIABLES
    for where, expr, _ in queries():
        assert variables(expr) <= defined, where


def test_the_dashboard_charts_every_kind_of_sidecar_metric() -> None:
    used = set().union(*(metric_names(expr) for _, expr, _ in queries()))
    assert used >= REQUIRED_METRICS


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The test stack, with a budget on its route so the budget gauges have a series."""
    config = edited(DOCUMENTS, "main", budget={"limitUSD": 5, "period": "day"})
    with Stack(tmp_path_factory.mktemp("stack"), config=config) as running:
        yield running


@pytest.fixture(scope="module")
def scraped(stack: Stack) -> dict[str, set[str]]:
    """Series name → label names, from `/metrics` after traffic that touches every metric."""
    sdk = openai.OpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0)
    sdk.chat.completions.create(model="auto", messages=HELLO)
    list(sdk.chat.completions.create(model="auto", messages=HELLO, stream=True,
                                     stream_options={"include_usage": True}))
    stack.call(lambda: stack.faults["oai"].always(Fault(FaultKind.STATUS, status=503)))
    for _ in range(2):  # outlierDetection.consecutiveFailures: an ejection after the failovers
        sdk.chat.completions.create(model="ha", messages=HELLO)
    stack.call(stack.faults["oai"].clear)
    with urllib.request.urlopen(stack.admin_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def test_every_metric_the_dashboard_queries_is_exposed_by_the_sidecar(scraped: dict[str, set[str]]) -> None:
    assert "llmroute_ejections_total" in scraped and "llmroute_budget_spent_usd" in scraped  # the traffic worked
    missing = {}
    for where, expr, _ in queries():
        names = metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        missing.update({name: where for name in names - scraped.keys()})
    assert missing == {}


def test_every_label_the_dashboard_filters_groups_or_shows_exists_on_its_metrics(
        scraped: dict[str, set[str]]) -> None:
    for where, expr, legend in queries():
        for metric, label in selector_labels(expr):
            assert label in scraped.get(metric, set()), f"{where}: {metric} has no label {label}"
        available = set().union(*(scraped.get(name, set()) for name in metric_names(expr)))
        for label in grouping_labels(expr) | set(_LEGEND_LABEL.findall(legend)):
            assert label in available, f"{where}: no metric of {expr!r} has the label {label}"

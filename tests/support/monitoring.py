"""The metrics the shipped monitoring (manifests/monitoring: PrometheusRule and
Grafana dashboard) names, by the component docs/observability.md says exports
them, and the metric names a component's /metrics really serves."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

from tests.unit.manifests.test_observability import (
    dashboard,
    dashboard_exprs,
    documented,
    metric_names,
    rules,
)


def named_by_monitoring() -> set[str]:
    """Documented metric names (histograms by their base name) that an alert rule or
    a dashboard panel reads."""
    docs = documented()
    names: set[str] = set()
    for expr in [r["expr"] for r in rules()] + dashboard_exprs(dashboard()):
        for n in metric_names(expr):
            base = re.sub(r"_(bucket|sum|count)$", "", n)
            names.add(base if base in docs and docs[base]["type"] == "histogram" else n)
    return names


def monitored(component: str) -> set[str]:
    """What ``component`` (webhook, scheduler, agent) must export for the monitoring."""
    docs = documented()
    return {n for n in named_by_monitoring() if n in docs
            and component in [c.strip() for c in docs[n]["by"].split(",")]}


def served(text: str) -> set[str]:
    """Metric names in a Prometheus text exposition: every family, whether it has
    samples yet or not (a labelled counter has none before its first event);
    counters under their ``_total`` name too."""
    out: set[str] = set()
    for family in text_string_to_metric_families(text):
        out.add(family.name)
        if family.type == "counter":
            out.add(family.name + "_total")
    return out

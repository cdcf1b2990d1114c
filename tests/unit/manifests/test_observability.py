"""The alert rules and the Grafana dashboard parse, use only the metric names
docs/observability.md documents, and the documented metrics marked "exported"
are really declared by the product code."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.manifests.conftest import MANIFESTS, ROOT, find, rendered

DOC = ROOT / "docs" / "observability.md"
MONITORING = MANIFESTS / "monitoring"
PACKAGES = ("ipam", "webhooks", "scheduler", "datapath", "stickyip")

#: PromQL functions, aggregations and keywords (and Grafana's label_values).
FUNCTIONS = {
    "abs", "absent", "absent_over_time", "avg", "avg_over_time", "bottomk", "ceil",
    "clamp_max", "clamp_min", "count", "count_over_time", "delta", "deriv", "floor",
    "group", "histogram_quantile", "idelta", "increase", "irate", "label_replace", "max",
    "max_over_time", "min", "min_over_time", "predict_linear", "quantile", "rate", "round",
    "scalar", "sort", "sort_desc", "stddev", "sum", "sum_over_time", "time", "timestamp",
    "topk", "vector", "label_values",
}
KEYWORDS = {"and", "or", "unless", "bool", "offset"}
_CLAUSE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def documented() -> dict[str, dict[str, str]]:
    """metric -> {type, labels, by, status} from the doc's table."""
    out = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        m = re.fullmatch(r"`(stickyip_[a-z0-9_]+)`", cells[0])
        if m and len(cells) >= 6:
            out[m.group(1)] = {"type": cells[1], "labels": cells[2], "by": cells[3],
                               "status": cells[4]}
    return out


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads; fails on unknown functions."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\$\w+", "1", text)
    text = _CLAUSE.sub("", text)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = m.group(0)
        if m.start() > 0 and (text[m.start() - 1].isdigit() or text[m.start() - 1] == "."):
            continue  # part of a number such as 1e3
        if word in KEYWORDS:
            continue
        if text[m.end():].lstrip().startswith("("):
            assert word in FUNCTIONS, f"unknown PromQL function {word!r} in {expr!r}"
        else:
            names.add(word)
    return names


def allowed(docs: dict[str, dict[str, str]]) -> set[str]:
    out = set(docs)
    for name, row in docs.items():
        if row["type"] == "histogram":
            out |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return out


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    return [r for g in doc["spec"]["groups"] for r in g["rules"]]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return data


def dashboard_exprs(d: dict[str, Any]) -> list[str]:
    out = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
    for var in d["templating"]["list"]:
        if var["type"] != "query":
            continue
        q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        # label_values(SELECTOR, LABEL): the selector is PromQL, the label is not.
        out.append(re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", q))
    return out


def test_metric_name_extraction() -> None:
    expr = ('histogram_quantile(0.99, sum by (cluster, le) (rate(x_bucket{a="b,c"}[5m]))) '
            '> 1 and on (pod) y_total offset 5m / topk($topn, z) > 1e3 or (w)')
    assert metric_names(expr) == {"x_bucket", "y_total", "z", "w"}
    with pytest.raises(AssertionError, match="unknown PromQL function"):
        metric_names("made_up(x)")


def test_the_doc_lists_metrics_with_a_type_and_a_status() -> None:
    docs = documented()
    assert len(docs) >= 20
    for name, row in docs.items():
        assert row["type"] in ("counter", "gauge", "histogram"), name
        assert row["status"] in ("exported", "expected"), name
        assert (row["type"] == "counter") == name.endswith("_total"), name


def test_rules_parse_and_use_only_documented_metrics() -> None:
    known = allowed(documented())
    alerts = rules()
    assert {"StickyipPoolNearlyExhausted", "StickyipFailoverStuck", "StickyipWebhookErrors",
            "StickyipWebhookSlow", "StickyipAgentHeartbeatMissing", "StickyipBpfMapNearlyFull",
            "StickyipRedisDown"} <= {r["alert"] for r in alerts}
    for r in alerts:
        assert r["labels"]["severity"] in ("info", "warning", "critical"), r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]
        assert re.fullmatch(r"\d+[smh]", r["for"]), r["alert"]
        expr = r["expr"]
        assert expr.count("(") == expr.count(")"), r["alert"]
        used = metric_names(expr)
        assert used, r["alert"]
        assert used <= known, f"{r['alert']} uses undocumented {sorted(used - known)}"


def test_documented_alerts_match_the_rule_file() -> None:
    listed = set(re.findall(r"^\| `(Stickyip\w+)` \|", DOC.read_text(), re.M))
    assert listed == {r["alert"] for r in rules()}


def test_dashboard_parses_and_uses_only_documented_metrics() -> None:
    d = dashboard()
    known = allowed(documented())
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    assert d["uid"] and d["title"]
    assert {v["name"] for v in d["templating"]["list"]} >= {"datasource", "cluster", "topn"}
    exprs = dashboard_exprs(d)
    assert len(exprs) >= 20
    for expr in exprs:
        used = metric_names(expr)
        assert used, expr
        assert used <= known, f"panel uses undocumented {sorted(used - known)}: {expr}"
    panel_exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
    assert all('cluster=~"$cluster"' in e for e in panel_exprs), "every panel filters by cluster"
    assert any("topk(" in e for e in panel_exprs)


def test_dashboard_ships_as_a_grafana_sidecar_configmap() -> None:
    cm = find(rendered("monitoring"), "ConfigMap", "stickyip-grafana-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["stickyip.json"]) == dashboard()


def test_pod_monitors_scrape_the_ports_the_components_expose() -> None:
    objs = rendered("default")
    for pm in (o for o in rendered("monitoring") if o["kind"] == "PodMonitor"):
        labels = pm["spec"]["selector"]["matchLabels"]
        (workload,) = [o for o in objs if o["kind"] in ("Deployment", "DaemonSet")
                       and labels.items() <= o["spec"]["template"]["metadata"]["labels"].items()]
        ports = {p["name"] for c in workload["spec"]["template"]["spec"]["containers"]
                 for p in c.get("ports", [])}
        for ep in pm["spec"]["podMetricsEndpoints"]:
            assert ep["port"] in ports, (pm["metadata"]["name"], ep["port"])
            assert ep["honorLabels"] is True


def _declared(name: str, source: str) -> bool:
    base = name.removesuffix("_total")
    if f'"{base}"' in source or f'"{base}_total"' in source:
        return True
    # Collectors that build names: f"stickyip_datapath_{f}" for f in ("spoofed_packets", ...)
    for prefix in re.findall(r'f"(stickyip_[a-z0-9_]*)\{', source):
        if base.startswith(prefix) and f'"{base[len(prefix):]}"' in source:
            return True
    return False


def test_metrics_marked_exported_are_declared_by_the_code() -> None:
    source = "\n".join(f.read_text() for pkg in PACKAGES
                       for f in sorted((ROOT / pkg).rglob("*.py")))
    missing = [n for n, row in documented().items()
               if row["status"] == "exported" and not _declared(n, source)]
    assert not missing, f"documented as exported but not declared in the code: {missing}"


def test_metrics_marked_expected_are_not_declared_yet() -> None:
    """The other way round: an 'expected' metric the code now declares must be
    marked 'exported' (the doc is what the rules and dashboards trust)."""
    source = "\n".join(f.read_text() for pkg in PACKAGES
                       for f in sorted((ROOT / pkg).rglob("*.py")))
    stale = [n for n, row in documented().items()
             if row["status"] == "expected" and _declared(n, source)]
    assert not stale, (f"now declared by the code, mark them exported in "
                       f"docs/observability.md: {stale}")


def test_doc_file_exists() -> None:
    assert Path(DOC).is_file()


def test_metrics_the_code_declares_are_documented() -> None:
    """Every metric the code declares is in the doc (the contract the rules use)."""
    declared = set()
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            text = f.read_text()
            declared |= set(re.findall(
                r'(?:Counter|Gauge|Histogram|Summary)\(\s*"(stickyip_[a-z0-9_]+)"', text))
    assert declared, "no metric declarations found: the scan is broken"
    docs = documented()
    known = {n.removesuffix("_total") for n in docs} | set(docs)
    missing = sorted(n for n in declared if n not in known)
    assert not missing, f"metrics declared but not in docs/observability.md: {missing}"


def test_rules_and_panels_read_only_exported_metrics() -> None:
    """An alert on a metric nobody exports can never fire: every metric a rule or a
    panel reads is marked exported (and the component tests scrape it)."""
    from tests.support.monitoring import named_by_monitoring

    docs = documented()
    unexported = sorted(n for n in named_by_monitoring()
                        if docs.get(n, {}).get("status") != "exported")
    assert not unexported, f"read by the monitoring but not exported: {unexported}"

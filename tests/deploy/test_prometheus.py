"""Prometheus config, alert rules and the Grafana dashboard (deploy/)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from app.telemetry.metrics import Metrics
from tests.deploy.conftest import REPO, duration_seconds, load_yaml, run

PROM = REPO / "deploy" / "prometheus"
GRAFANA = REPO / "deploy" / "grafana"
METRIC_NAME = re.compile(r"\bmodelserve_[a-z_]+\b")


def exported_series_names() -> set[str]:
    """Every series name the service's Metrics can export (counter _total, histogram _bucket...)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "gauge": ("",),
    }
    return {fam.name + s for fam in Metrics().registry.collect() for s in suffixes[fam.type]}


def alert_rules() -> list[dict]:
    return [rule for group in load_yaml(PROM / "alerts.yml")["groups"] for rule in group["rules"]]


def rule(name: str) -> dict:
    return next(r for r in alert_rules() if r.get("alert") == name)


class TestPrometheusConfig:
    def test_promtool_accepts_config(self, promtool):
        """promtool checks prometheus.yml, including the rule files it loads."""
        proc = run([promtool, "check", "config", PROM / "prometheus.yml"])
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def test_scrapes_the_compose_app_service(self):
        """The modelserve job scrapes /metrics on the compose service name and the image's port."""
        compose = load_yaml(REPO / "docker-compose.yml")
        job = next(j for j in load_yaml(PROM / "prometheus.yml")["scrape_configs"] if j["job_name"] == "modelserve")
        targets = [t for sc in job["static_configs"] for t in sc["targets"]]
        assert job.get("metrics_path", "/metrics") == "/metrics"
        assert targets == ["app:8000"]
        assert "app" in compose["services"]

    def test_loads_alerts_file(self):
        """alerts.yml is the rule file Prometheus loads."""
        assert load_yaml(PROM / "prometheus.yml")["rule_files"] == ["alerts.yml"]


class TestAlertRules:
    def test_promtool_accepts_rules(self, promtool):
        """promtool parses every rule and its PromQL."""
        proc = run([promtool, "check", "rules", PROM / "alerts.yml"])
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def test_promtool_unit_tests_pass(self, promtool):
        """The unit tests in alerts_test.yml pass under promtool."""
        proc = run([promtool, "test", "rules", PROM / "alerts_test.yml"])
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def test_promtool_unit_tests_are_not_vacuous(self, promtool, tmp_path):
        """With the latency threshold raised out of reach, the firing test fails."""
        alerts = (PROM / "alerts.yml").read_text()
        assert ") > 0.2\n" in alerts
        (tmp_path / "alerts.yml").write_text(alerts.replace(") > 0.2\n", ") > 5\n"))
        (tmp_path / "alerts_test.yml").write_text((PROM / "alerts_test.yml").read_text())
        proc = run([promtool, "test", "rules", tmp_path / "alerts_test.yml"])
        assert proc.returncode != 0
        assert "ModelservePredictLatencyHigh" in proc.stdout + proc.stderr

    def test_every_alert_is_tested_firing_and_not_firing(self):
        """Each alert has at least one unit test where it fires and one where it does not."""
        fired: set[str] = set()
        silent: set[str] = set()
        for test in load_yaml(PROM / "alerts_test.yml")["tests"]:
            for case in test.get("alert_rule_test", []):
                (fired if case.get("exp_alerts") else silent).add(case["alertname"])
        names = {r["alert"] for r in alert_rules()}
        assert names - fired == set(), "alerts never shown firing"
        assert names - silent == set(), "alerts never shown silent"

    def test_every_alert_has_severity_and_text(self):
        """Routing needs a severity; people need a summary and a description."""
        for r in alert_rules():
            assert r["labels"]["severity"] in {"page", "ticket"}, r["alert"]
            assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]

    def test_rules_only_use_metrics_the_service_exports(self):
        """Every modelserve_* series in the rules is defined in app/telemetry/metrics.py."""
        used = set(METRIC_NAME.findall((PROM / "alerts.yml").read_text()))
        assert used, "no modelserve metric referenced"
        assert used - exported_series_names() == set()

    def test_latency_alert_is_predict_p95_over_200ms_for_5m(self):
        """The latency alert is the p95 of /predict from the HTTP duration histogram, > 200 ms for 5 m."""
        r = rule("ModelservePredictLatencyHigh")
        expr = " ".join(r["expr"].split())
        assert expr.startswith("histogram_quantile(0.95,")
        assert 'modelserve_http_request_duration_seconds_bucket{route="/predict"}' in expr
        assert expr.endswith("> 0.2")
        assert duration_seconds(r["for"]) == 300

    def test_error_rate_ignores_probe_routes(self):
        """Readiness 503s during start-up and drain are not counted as user-facing errors."""
        expr = rule("ModelserveHighErrorRate")["expr"]
        assert 'status="5xx"' in expr
        assert expr.count('route!~"/health/.*|/metrics"') == 2


def dashboard() -> dict:
    return json.loads((GRAFANA / "dashboards" / "modelserve.json").read_text())


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


class TestGrafana:
    def test_dashboard_queries_are_valid_promql(self, promtool, tmp_path: Path):
        """Every panel query parses (checked by promtool as recording rules, Grafana's range variables set to 5m)."""
        exprs = [re.sub(r"\$__(rate_interval|range|interval)", "5m", e) for e in dashboard_exprs()]
        assert exprs
        records = [{"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(exprs)]
        rules = {"groups": [{"name": "dashboard", "rules": records}]}
        path = tmp_path / "dashboard_rules.yml"
        path.write_text(json.dumps(rules))
        proc = run([promtool, "check", "rules", path])
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def test_dashboard_only_uses_metrics_the_service_exports(self):
        """Every modelserve_* series on the dashboard is defined in app/telemetry/metrics.py."""
        used = set(METRIC_NAME.findall("\n".join(dashboard_exprs())))
        assert used - exported_series_names() == set()

    def test_dashboard_uses_the_provisioned_datasource(self):
        """Panels point at the datasource uid that provisioning creates."""
        sources = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
        uids = {s["uid"] for s in sources}
        for panel in dashboard()["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] in uids, panel["title"]

    def test_dashboard_panels_have_unique_ids_and_fit_the_grid(self):
        """Panel ids are unique and every panel lies within Grafana's 24-column grid."""
        panels = dashboard()["panels"]
        assert len({p["id"] for p in panels}) == len(panels)
        for p in panels:
            assert p["gridPos"]["x"] >= 0 and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]

    @pytest.mark.parametrize("service_path", ["/etc/grafana/dashboards", "/etc/grafana/provisioning"])
    def test_compose_mounts_what_provisioning_expects(self, service_path):
        """The Grafana container mounts the provisioning and dashboard folders where the provider looks."""
        provider = load_yaml(GRAFANA / "provisioning" / "dashboards" / "modelserve.yml")["providers"][0]
        assert provider["options"]["path"] == "/etc/grafana/dashboards"
        volumes = load_yaml(REPO / "docker-compose.yml")["services"]["grafana"]["volumes"]
        assert any(v.split(":")[1] == service_path for v in volumes)

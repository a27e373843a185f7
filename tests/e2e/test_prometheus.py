"""A real Prometheus scraping a real two-worker `modelserve serve`: PromQL sees exactly the traffic sent.

Prometheus scrapes every second and evaluates deploy/prometheus/alerts.yml.
Traffic is sent in two phases with a scrape in between, so ``rate()`` over
the latency histogram has an increase to work on (a series that first appears
with its full count has no rate). Every wait polls with a deadline; the
assertions are on counts, never on timings.
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from app.telemetry.metrics import LATENCY_BUCKETS
from harness import ServerProcess
from tests.support.prometheus import JOB, PrometheusServer
from tests.support.workspace import Workspace, manifest

pytestmark = pytest.mark.e2e

ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
BAD = {"user_id": "u-00001", "features": {"amount": "not a number"}}  # a 422


async def _send(url: str, bodies: list[dict[str, Any]], clients: int = 8) -> dict[int, int]:
    """POST every body once to /predict over ``clients`` concurrent clients; status -> count."""
    statuses: dict[int, int] = {}
    queue = list(reversed(bodies))

    async def client() -> None:
        # No keep-alive: every request is a new connection, which either worker may accept.
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=url, timeout=30, trust_env=False, limits=limits) as c:
            while queue:
                r = await c.post("/predict", json=queue.pop())
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    await asyncio.gather(*(client() for _ in range(clients)))
    return statuses


def _per_worker_predictions(metrics_dir: Path) -> dict[str, float]:
    """predictions_total{model_version="v2"} from each worker's own multiprocess file."""
    out = {}
    for path in sorted(metrics_dir.glob("counter_*.db")):
        out[path.stem.split("_")[1]] = sum(
            s.value
            for m in MultiProcessCollector.merge([str(path)])
            for s in m.samples
            if s.name == "modelserve_predictions_total" and s.labels.get("model_version") == "v2"
        )
    return out


def _buckets(metrics_text: str) -> list[tuple[float, float]]:
    """(le, cumulative count) of prediction_latency_seconds{model_version="v2"}, in order."""
    out = [
        (float(s.labels["le"]), s.value)
        for fam in text_string_to_metric_families(metrics_text)
        for s in fam.samples
        if s.name == "modelserve_prediction_latency_seconds_bucket" and s.labels.get("model_version") == "v2"
    ]
    return sorted(out)


def _histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus's histogram_quantile over cumulative buckets (linear interpolation within a bucket)."""
    total = buckets[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for i, (le, count) in enumerate(buckets):
        if count >= rank:
            if math.isinf(le):
                return buckets[i - 1][0]
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    raise AssertionError("unreachable: the +Inf bucket holds every observation")


class TestRealPrometheus:
    def test_promql_over_two_workers_sees_exactly_the_traffic(self, trained: Workspace, tmp_path: Path) -> None:
        sample = manifest(trained)["sample"]
        good = sample["request"]
        metrics_dir = tmp_path / "metrics"
        env = trained.env(MODELSERVE_METRICS_DIR=str(metrics_dir), MODELSERVE_SHUTDOWN_DRAIN_SECONDS="0")
        with ServerProcess(env, tmp_path / "server.log", args=["--workers", "2"]) as srv:
            srv.wait_ready()
            with PrometheusServer(tmp_path / "prometheus", targets=[srv.url], rule_files=[ALERTS]) as prom:
                # Both workers ready (modelserve_ready is the minimum over live workers) and scraped.
                prom.wait_until(f'modelserve_ready{{job="{JOB}"}} == 1', timeout=60)
                assert prom.scalar(f'up{{job="{JOB}"}}') == 1

                # Phase 1: until both workers have answered predictions, so the sum really spans processes.
                sent_good = sent_bad = 0
                deadline = time.monotonic() + 30
                while True:
                    statuses = asyncio.run(_send(srv.url, [good] * 40 + [BAD] * 5))
                    assert statuses == {200: 40, 422: 5}, statuses
                    sent_good, sent_bad = sent_good + 40, sent_bad + 5
                    split = _per_worker_predictions(metrics_dir)
                    if sum(1 for v in split.values() if v > 0) >= 2 or time.monotonic() > deadline:
                        break
                assert sum(1 for v in split.values() if v > 0) >= 2, f"one worker took every request: {split}"
                prom.wait_scraped_after(time.time())

                # Phase 2: more of both, then a scrape that started after the last answer.
                statuses = asyncio.run(_send(srv.url, [good] * 60 + [BAD] * 7))
                assert statuses == {200: 60, 422: 7}, statuses
                sent_good, sent_bad = sent_good + 60, sent_bad + 7
                scraped_at = prom.wait_scraped_after(time.time())
                prom.wait_scraped_after(scraped_at)  # and one more, so both workers likely answered a scrape
                split = _per_worker_predictions(metrics_dir)
                assert sum(split.values()) == sent_good

                assert prom.scalar(f'sum(modelserve_predictions_total{{job="{JOB}", model_version="v2"}})') == sent_good
                assert prom.query('modelserve_predictions_total{model_version!="v2"}') == []
                assert prom.scalar('sum(modelserve_http_requests_total{route="/predict", status="4xx"})') == sent_bad
                assert prom.scalar('sum(modelserve_http_requests_total{route="/predict", status="2xx"})') == sent_good
                assert prom.scalar('sum(modelserve_prediction_latency_seconds_count{model_version="v2"})') == sent_good
                assert prom.scalar('sum(modelserve_prediction_latency_seconds_bucket{le="+Inf"})') == sent_good
                # Every scrape since the traffic ended (whichever worker answered it) gave the same total.
                window = prom.api(
                    "query", query=f'modelserve_predictions_total{{job="{JOB}", model_version="v2"}}[30s]'
                )["result"]
                after = [float(v) for series in window for t, v in series["values"] if float(t) >= scraped_at]
                assert len(after) >= 2 and set(after) == {sent_good}, after

                # p99 from the rate of the histogram: finite, inside the bucket range.
                p99_rate = prom.scalar(
                    "histogram_quantile(0.99, sum by (le) (rate(modelserve_prediction_latency_seconds_bucket[1m])))"
                )
                assert math.isfinite(p99_rate) and 0 < p99_rate <= LATENCY_BUCKETS[-1], p99_rate
                # p99 over all observations equals what the service's own buckets give.
                p99_all = prom.scalar(
                    "histogram_quantile(0.99, sum by (le) (modelserve_prediction_latency_seconds_bucket))"
                )
                expected = _histogram_quantile(0.99, _buckets(httpx.get(srv.url + "/metrics").text))
                assert p99_all == pytest.approx(expected, rel=1e-9)

                # The alert rules are loaded and evaluated; nothing about readiness is pending or firing.
                rules = prom.alerting_rules()
                assert {"ModelserveNotReady", "ModelserveTargetDown", "ModelserveHighErrorRate"} <= set(rules)
                assert all(r["health"] == "ok" for r in rules.values()), rules
                assert rules["ModelserveNotReady"]["state"] == "inactive"
                assert rules["ModelserveTargetDown"]["state"] == "inactive"
                assert prom.query('ALERTS{alertname=~"ModelserveNotReady|ModelserveTargetDown"}') == []

                # The rules follow live data: once the service is gone, its target-down alert is pending.
                srv.signal()
                assert srv.proc.wait(60) == 0, srv.output()
                prom.wait_until(f'up{{job="{JOB}"}} == 0')
                pending = prom.wait_until('ALERTS{alertname="ModelserveTargetDown", alertstate="pending"}')
                assert pending[0]["metric"]["instance"] == srv.url.removeprefix("http://")
        print(
            f"\nprometheus: {sent_good} predictions over workers {split}, {sent_bad} 422s; "
            f"p99 rate-based {p99_rate * 1e3:.3f} ms, over all {p99_all * 1e3:.3f} ms"
        )

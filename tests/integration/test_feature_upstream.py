"""The upstream source against real local HTTP servers: retries, Retry-After, deadline, single-flight, stale, 404s."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import threading
import time

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from app.errors import FeaturesUnavailable, UnknownUser
from app.features.memory import MemoryTier
from app.features.server import FeatureServer
from app.features.upstream import RetryBudget, UpstreamSource
from app.main import create_app
from app.telemetry.metrics import Metrics
from harness import ManagedProcess, free_port, http_ok
from tests.support.workspace import manifest, serving

FEATURES = {"tenure_days": 12, "country": "DE"}
SLACK = 0.25  # generous: the machine is shared; the contract is the budget, not the slack


class Script:
    """A handler that answers with the given responses in turn (the last repeats) and counts calls."""

    def __init__(self, *responses: Response | float) -> None:
        self.responses = list(responses)
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        with self.lock:
            step = self.responses[min(self.calls, len(self.responses) - 1)]
            self.calls += 1
        if isinstance(step, float):  # a slow answer: sleep, then succeed
            time.sleep(step)
            return ok()
        return step


def ok(features: dict | None = None) -> Response:
    body = {"user_id": "u-1", "features": features or FEATURES}
    return Response(json.dumps(body), status=200, content_type="application/json")


def status(code: int, retry_after: str | None = None) -> Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return Response("{}", status=code, headers=headers, content_type="application/json")


@pytest.fixture
def upstream():
    server = HTTPServer(threaded=True)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


def serve(server: HTTPServer, script: Script, user: str = "u-1") -> Script:
    server.expect_request(f"/users/{user}/features").respond_with_handler(script)
    return script


def source(url: str, metrics: Metrics | None = None, **kw) -> UpstreamSource:
    # Roomy timeouts (the machine is shared); the deadline tests set tight ones themselves.
    defaults = {"budget": 1.0, "attempt_timeout": 0.3, "max_retries": 3, "backoff_base": 0.005, "backoff_cap": 0.02}
    return UpstreamSource(url.rstrip("/"), metrics or Metrics(), rng=random.Random(3), **{**defaults, **kw})


def retries(metrics: Metrics, reason: str) -> float:
    return metrics.upstream_retries.labels(reason)._value.get()


class TestRetries:
    async def test_429_retry_after_zero_is_retried(self, upstream):
        """A 429 with Retry-After: 0 is retried and the next answer is used."""
        script = serve(upstream, Script(status(429, "0"), ok()))
        metrics = Metrics()
        src = source(upstream.url_for(""), metrics)
        assert await src.fetch("u-1") == FEATURES
        assert script.calls == 2 and retries(metrics, "429") == 1
        await src.close()

    async def test_retry_after_beyond_budget_fails_fast_and_is_remembered(self, upstream):
        """A Retry-After longer than the budget fails at once with it, and later calls wait it out without calling."""
        script = serve(upstream, Script(status(503, "7"), ok()))
        src = source(upstream.url_for(""), budget=0.1)
        t0 = time.perf_counter()
        with pytest.raises(FeaturesUnavailable) as err:
            await src.fetch("u-1")
        assert time.perf_counter() - t0 < 0.1 + SLACK
        assert err.value.retry_after == pytest.approx(7, abs=0.1)
        with pytest.raises(FeaturesUnavailable) as again:
            await src.fetch("u-1")
        assert script.calls == 1
        assert 6 < again.value.retry_after <= 7
        await src.close()

    async def test_500_not_retried_unless_configured(self, upstream):
        """A 500 fails at once by default and is retried when retry_500 is set."""
        script = serve(upstream, Script(status(500), status(500), ok()))
        src = source(upstream.url_for(""))
        with pytest.raises(FeaturesUnavailable):
            await src.fetch("u-1")
        assert script.calls == 1
        await src.close()

        metrics = Metrics()
        script.calls = 0
        src = source(upstream.url_for(""), metrics, retry_500=True)
        assert await src.fetch("u-1") == FEATURES
        assert script.calls == 3 and retries(metrics, "500") == 2
        await src.close()

    async def test_persistent_503_stops_after_max_retries(self, upstream):
        """An upstream that keeps failing is called 1 + max_retries times, within the budget."""
        script = serve(upstream, Script(status(503)))
        src = source(upstream.url_for(""), budget=1.0, max_retries=2)
        t0 = time.perf_counter()
        with pytest.raises(FeaturesUnavailable):
            await src.fetch("u-1")
        assert time.perf_counter() - t0 < 1.0 + SLACK
        assert script.calls == 3
        await src.close()

    async def test_other_4xx_not_retried(self, upstream):
        """A 400 is the upstream refusing the request: no retry."""
        script = serve(upstream, Script(status(400)))
        src = source(upstream.url_for(""))
        with pytest.raises(FeaturesUnavailable):
            await src.fetch("u-1")
        assert script.calls == 1
        await src.close()

    async def test_slow_upstream_cut_at_attempt_timeout_within_deadline(self, upstream):
        """A slow upstream is abandoned per attempt and retried, and the whole call respects the deadline."""
        script = serve(upstream, Script(0.5))
        metrics = Metrics()
        src = source(upstream.url_for(""), metrics, budget=0.1, attempt_timeout=0.03)
        t0 = time.perf_counter()
        with pytest.raises(FeaturesUnavailable):
            await src.fetch("u-1")
        assert time.perf_counter() - t0 < 0.1 + SLACK
        assert script.calls >= 2 and retries(metrics, "timeout") >= 1
        await src.close()

    async def test_refused_connection_retried_then_unavailable(self):
        """Connection refused is retried max_retries times, then 503."""
        metrics = Metrics()
        src = source(f"http://127.0.0.1:{free_port()}", metrics, budget=1.0, max_retries=3)
        with pytest.raises(FeaturesUnavailable):
            await src.fetch("u-1")
        assert src.calls == 4 and retries(metrics, "connect") == 3
        await src.close()

    async def test_retry_budget_caps_retries(self, upstream):
        """With the burst spent, a failing upstream sees retries only at the budget's ratio."""
        script = Script(status(503))
        for i in range(10):
            serve(upstream, script, f"u-{i}")
        src = source(upstream.url_for(""), budget=1.0, retry_budget=RetryBudget(0.0, 2.0))
        for i in range(10):
            with pytest.raises(FeaturesUnavailable):
                await src.fetch(f"u-{i}")
        assert script.calls == 10 + 2
        await src.close()

    async def test_oversized_answer_is_refused_unread(self, upstream):
        """A 200 far larger than one user's features (a broken upstream streaming a dump) is a failed call,
        counted invalid, read no further than MAX_BODY: it was read whole into memory, then parsed."""
        from app.features.upstream import MAX_BODY

        padding = " " * (64 * MAX_BODY)
        big = Response(json.dumps({"user_id": "u-1", "features": FEATURES}) + padding, content_type="application/json")
        serve(upstream, Script(big))
        metrics = Metrics()
        src = source(upstream.url_for(""), metrics, attempt_timeout=5.0, budget=10.0)
        with pytest.raises(FeaturesUnavailable, match="larger than"):
            await src.fetch("u-1")
        assert metrics.feature_lookups.labels("upstream", "invalid")._value.get() == 1
        await src.close()

    async def test_answer_for_another_user_is_refused(self, upstream):
        """An answer naming another user (a proxy or cache mixing answers up) is a failed call, counted invalid:
        its features were served as this user's."""
        other = Response(json.dumps({"user_id": "u-2", "features": FEATURES}), content_type="application/json")
        serve(upstream, Script(other))
        metrics = Metrics()
        src = source(upstream.url_for(""), metrics)
        with pytest.raises(FeaturesUnavailable, match="another user"):
            await src.fetch("u-1")
        assert metrics.feature_lookups.labels("upstream", "invalid")._value.get() == 1
        await src.close()

    async def test_answer_without_user_id_or_naming_it_as_a_number_is_used(self, upstream):
        for body in ({"features": FEATURES}, {"user_id": 17, "features": FEATURES}):
            upstream.clear()
            user = "17" if "user_id" in body else "u-1"
            serve(upstream, Script(Response(json.dumps(body), content_type="application/json")), user)
            src = source(upstream.url_for(""))
            assert await src.fetch(user) == FEATURES
            await src.close()

    async def test_unknown_user_is_404(self, upstream):
        """An upstream 404 is UnknownUser, not retried."""
        script = serve(upstream, Script(status(404)))
        src = source(upstream.url_for(""))
        with pytest.raises(UnknownUser):
            await src.fetch("u-1")
        assert script.calls == 1
        await src.close()


class TestSharing:
    async def test_concurrent_misses_share_one_call(self, upstream):
        """Twenty concurrent lookups of one user make one upstream call."""
        script = serve(upstream, Script(0.05))
        src = source(upstream.url_for(""), budget=1.0, attempt_timeout=0.5)
        results = await asyncio.gather(*(src.fetch("u-1") for _ in range(20)))
        assert results == [FEATURES] * 20
        assert script.calls == 1
        await src.close()

    async def test_batch_shares_calls_with_singles(self, upstream):
        """A batch and a single lookup of the same user in flight together make one call."""
        script = serve(upstream, Script(0.05))
        src = source(upstream.url_for(""), budget=1.0, attempt_timeout=0.5)
        single, many = await asyncio.gather(src.fetch("u-1"), src.fetch_many(["u-1", "u-1"]))
        assert single == FEATURES and many == {"u-1": FEATURES}
        assert script.calls == 1
        await src.close()


def tiered(src: UpstreamSource, metrics: Metrics, **memory) -> FeatureServer:
    opts = {"max_age": 0.0, "max_entries": 100, "stale_window": 60.0, "negative_ttl": 0.3, **memory}
    return FeatureServer(src, metrics, memory=MemoryTier(**opts), budget=1.0)


class TestThroughFeatureServer:
    async def test_stale_if_error(self, upstream):
        """When the upstream fails, a recent value is served as stale and counted."""
        serve(upstream, Script(ok(), status(503)))
        metrics = Metrics()
        server = tiered(source(upstream.url_for(""), metrics), metrics)
        assert await server.get("u-1") == (FEATURES, "upstream")
        assert await server.get("u-1") == (FEATURES, "stale")
        assert metrics.feature_lookups.labels("memory", "stale")._value.get() == 1
        await server.close()

    async def test_no_stale_value_is_503(self, upstream):
        """A failing upstream without a stale value is FeaturesUnavailable with a Retry-After."""
        serve(upstream, Script(status(503, "2")))
        server = tiered(source(upstream.url_for("")), Metrics())
        with pytest.raises(FeaturesUnavailable) as err:
            await server.get("u-1")
        assert err.value.retry_after == 2
        await server.close()

    async def test_unknown_user_negative_cached(self, upstream):
        """A 404 is remembered briefly: repeated lookups do not reach the upstream until it expires."""
        script = serve(upstream, Script(status(404)))
        server = tiered(source(upstream.url_for("")), Metrics())
        for _ in range(5):
            with pytest.raises(UnknownUser):
                await server.get("u-1")
        assert script.calls == 1
        await asyncio.sleep(0.35)
        with pytest.raises(UnknownUser):
            await server.get("u-1")
        assert script.calls == 2
        await server.close()


@pytest.fixture
def upstream_api(trained, tmp_path):
    """The demo upstream API as a real process over the trained feature table."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        "-m",
        "app.features.upstream_api",
        "--port",
        str(port),
        "--table",
        str(trained.feature_table),
    ]
    with ManagedProcess(
        "upstream API", command, log_path=tmp_path / "upstream.log", ready=http_ok(url + "/health"), ready_timeout=30
    ) as proc:
        yield url, proc


class TestServiceWithUpstreamAPI:
    def test_predicts_through_the_upstream_api(self, trained, upstream_api):
        """Through the demo upstream API: the sample predicts exactly, unknown users 404, a dead upstream 503s."""
        url, proc = upstream_api
        sample = manifest(trained, "production")["sample"]
        settings = trained.settings(upstream_url=url, feature_budget_ms=500.0, upstream_timeout_ms=200.0)
        with serving(create_app(settings)) as client:
            r = client.post("/predict", json=sample["request"])
            assert r.status_code == 200, r.text
            assert r.json()["probability"] == pytest.approx(sample["expected"]["probability"], abs=1e-5)
            r = client.post("/predict", json={**sample["request"], "user_id": "u-nobody"})
            assert r.status_code == 404
            assert r.json()["detail"][0]["loc"] == ["body", "user_id"]

            proc.stop(10)
            r = client.post("/predict", json={**sample["request"], "user_id": "u-nobody-2"})
            assert r.status_code == 503
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["error"].startswith("features unavailable")

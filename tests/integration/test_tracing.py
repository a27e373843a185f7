"""Traces through a real OTLP/HTTP exporter into a local receiver that decodes them with the OTLP definitions.

Each test runs the service in-process with the standard OTEL_* variables set,
makes requests, flushes, and reads the span tree the receiver decoded: a Redis
hit, a frozen Redis with the compute fallback, an upstream 429 then success,
the incoming trace id kept, the upstream seeing ``traceparent``, and an
OpenMetrics exemplar pointing at an exported trace.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from app.main import create_app
from app.telemetry import tracing
from app.telemetry.logs import current_trace_ids
from tests.integration.test_v2 import v2_inputs
from tests.support.redis_server import RedisServer
from tests.support.workspace import Workspace, manifest, sample, serving

INCOMING_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING = f"00-{INCOMING_TRACE}-00f067aa0ba902b7-01"


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent: str
    kind: int
    attributes: dict[str, Any]
    links: list[str] = field(default_factory=list)


class Receiver:
    """A tiny OTLP/HTTP trace receiver: accepts POST /v1/traces and keeps every decoded span."""

    def __init__(self, proxy_for: str = "") -> None:
        self.proxy_for = proxy_for
        self.spans: list[Span] = []
        self.posts = 0
        self.seen: list[tuple[str, str | None]] = []  # (path, Authorization) of every POST
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                with receiver.lock:
                    receiver.seen.append((self.path, self.headers.get("Authorization")))
                path = self.path.removeprefix(receiver.proxy_for)  # a proxy sees the absolute URL
                ok = path == "/v1/traces" and self.headers.get("Content-Type") == "application/x-protobuf"
                if ok:
                    receiver.accept(body)
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def accept(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        with self.lock:
            self.posts += 1
            for rs in request.resource_spans:
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        attributes = {a.key: _value(a.value) for a in s.attributes}
                        attributes.update({"resource." + a.key: _value(a.value) for a in rs.resource.attributes})
                        self.spans.append(
                            Span(
                                s.name,
                                s.trace_id.hex(),
                                s.span_id.hex(),
                                s.parent_span_id.hex(),
                                s.kind,
                                attributes,
                                [link.trace_id.hex() for link in s.links],
                            )
                        )

    @classmethod
    def running(cls) -> Iterator[Receiver]:
        """A started receiver, shut down after the ``yield`` (the body of the fixtures that share it)."""
        r = cls()
        r.thread.start()
        yield r
        r.server.shutdown()
        r.server.server_close()

    def trace(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def server_spans(self, route: str = "/predict") -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.kind == 2 and s.attributes.get("http.route") == route]


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def tree(spans: list[Span]) -> str:
    """The spans as an indented tree, children under their parent (roots: parents not among them)."""
    ids = {s.span_id for s in spans}
    lines: list[str] = []

    def walk(level: list[Span], depth: int) -> None:
        for s in level:
            attrs = {k: v for k, v in s.attributes.items() if not k.startswith("resource.")}
            lines.append("  " * depth + f"{s.name} {attrs}")
            walk([c for c in spans if c.parent == s.span_id], depth + 1)

    walk([s for s in spans if s.parent not in ids], 0)
    return "\n".join(lines)


def children(spans: list[Span], parent: Span) -> list[Span]:
    return [s for s in spans if s.parent == parent.span_id]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from Receiver.running()


@pytest.fixture
def otel_env(monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> Receiver:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "modelserve-test")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    return receiver


def flushed(receiver: Receiver, trace_id: str, name: str, timeout: float = 10.0) -> list[Span]:
    """The trace's spans once one named ``name`` has arrived (the server span ends last)."""
    deadline = time.monotonic() + timeout
    while True:
        tracing.force_flush()
        spans = receiver.trace(trace_id)
        if any(s.name == name for s in spans):
            return spans
        if time.monotonic() > deadline:
            raise TimeoutError(f"no span {name!r} in trace {trace_id}: {[s.name for s in spans]}")
        time.sleep(0.02)


def one(spans: list[Span], name: str) -> Span:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


@pytest.fixture
def redis_server(tmp_path):
    with RedisServer(tmp_path / "redis") as server:
        yield server


@contextmanager
def features_upstream(
    trained: Workspace, log_dir: Any = None, refusals: int = 0
) -> Iterator[tuple[Any, list[tuple[str, str | None]]]]:
    """Settings for an app whose store features come from an upstream stub (no memory caching, the prediction
    log in ``log_dir``), and the (traceparent, tracestate) headers the stub sees, one pair a request. The
    first ``refusals`` requests are answered 429 (Retry-After: 0)."""
    m = manifest(trained, "production")
    user_id = m["sample"]["request"]["user_id"]
    store = {f["name"] for f in m["features"] if f["source"] == "store"}
    features = {k: v for k, v in m["sample"]["row"].items() if k in store}
    seen: list[tuple[str, str | None]] = []

    def handler(request: Request) -> Response:
        seen.append((request.headers.get("traceparent", ""), request.headers.get("tracestate")))
        if len(seen) <= refusals:
            return Response("{}", status=429, headers={"Retry-After": "0"}, content_type="application/json")
        payload = {"user_id": user_id, "features": features}
        return Response(json.dumps(payload), status=200, content_type="application/json")

    upstream = HTTPServer(threaded=True)
    upstream.start()
    try:
        upstream.expect_request(f"/users/{user_id}/features").respond_with_handler(handler)
        settings = trained.settings(
            upstream_url=upstream.url_for("/"),
            feature_budget_ms=5000.0,
            upstream_timeout_ms=5000.0,
            memory_max_age_seconds=0.0,
            log_dir=log_dir,
        )
        yield settings, seen
    finally:
        upstream.clear()
        upstream.stop()


def prediction_traces(log_dir: Any) -> list[str | None]:
    """The trace ids of the prediction records in the prediction log at ``log_dir``, in order."""
    records = [
        json.loads(line) for p in sorted(log_dir.glob("predictions-*.jsonl")) for line in p.read_text().splitlines()
    ]
    return [r["trace_id"] for r in records if r["kind"] == "prediction"]


class TestOff:
    def test_no_endpoint_no_tracing(self, trained: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without OTEL_EXPORTER_OTLP_ENDPOINT tracing stays off, predictions carry no trace, /metrics no exemplar."""
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
        with serving(create_app(trained.settings())) as client:
            assert not tracing.enabled
            body = sample(trained, "production")["request"]
            r = client.post("/predict", json=body, headers={"traceparent": INCOMING})
            assert r.status_code == 200
            text = client.get("/metrics", headers={"Accept": "application/openmetrics-text"}).text
            assert "trace_id" not in text

    def test_grpc_protocol_is_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """OTEL_EXPORTER_OTLP_PROTOCOL=grpc leaves tracing off (the gRPC exporter is not installed)."""
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
        assert tracing.setup(env) is False
        assert not tracing.enabled


class TestSpanTrees:
    def test_redis_hit(self, trained: Workspace, redis_server: RedisServer, otel_env: Receiver) -> None:
        """A Redis hit: server span (route, status, version) over decode, features (tier redis) with a redis
        child, and inference; the incoming trace id is kept; the resource comes from the OTEL_* variables."""
        body = sample(trained, "production")["request"]
        settings = trained.settings(
            redis_url=redis_server.url, memory_max_age_seconds=0, redis_connect_timeout_ms=25, redis_timeout_ms=25
        )
        app = create_app(settings)
        with serving(app) as client:
            assert tracing.enabled
            assert client.post("/predict", json=body).status_code == 200  # computed, written back to Redis
            redis = app.state.container.features.redis
            key = redis.prefix + body["user_id"]
            deadline = time.monotonic() + 5
            while not redis_server.client().exists(key):
                assert time.monotonic() < deadline, "write-back never landed"
                time.sleep(0.01)
            r = client.post("/predict", json=body, headers={"traceparent": INCOMING, "tracestate": "vendor=1"})
            assert r.status_code == 200
            spans = flushed(otel_env, INCOMING_TRACE, "POST /predict")
        print(tree(spans))
        server = one(spans, "POST /predict")
        assert server.parent == "00f067aa0ba902b7"  # the caller's span
        assert server.attributes["http.route"] == "/predict"
        assert server.attributes["http.response.status_code"] == 200
        assert server.attributes["modelserve.model_version"] == r.headers["x-model-version"]
        assert server.attributes["resource.service.name"] == "modelserve-test"
        assert server.attributes["resource.deployment.environment"] == "test"
        assert [s.name for s in children(spans, server)] == ["decode", "features", "inference"]
        features = one(spans, "features")
        assert features.attributes["modelserve.feature.tier"] == "redis"
        assert features.attributes["modelserve.feature.cache"] == "hit"
        assert features.attributes["modelserve.redis.breaker"] == "closed"
        lookup = one(spans, "redis")
        assert lookup.parent == features.span_id
        assert lookup.attributes["modelserve.redis.outcome"] == "hit"
        inference = one(spans, "inference")
        assert inference.attributes["modelserve.rows"] == 1
        assert inference.attributes["modelserve.model_version"] == r.headers["x-model-version"]

    def test_redis_frozen_falls_back_to_compute(
        self, trained: Workspace, redis_server: RedisServer, otel_env: Receiver
    ) -> None:
        """With Redis frozen (SIGSTOP) the redis span says error, the features span names the compute tier."""
        body = sample(trained, "production")["request"]
        settings = trained.settings(redis_url=redis_server.url, memory_max_age_seconds=0, redis_breaker_threshold=100)
        with serving(create_app(settings)) as client:
            redis_server.freeze()
            try:
                r = client.post("/predict", json=body, headers={"traceparent": INCOMING})
            finally:
                redis_server.thaw()
            assert r.status_code == 200
            spans = flushed(otel_env, INCOMING_TRACE, "POST /predict")
        print(tree(spans))
        features = one(spans, "features")
        assert features.attributes["modelserve.feature.tier"] == "table"
        assert features.attributes["modelserve.feature.cache"] == "miss"
        lookup = one(spans, "redis")
        assert lookup.parent == features.span_id
        assert lookup.attributes["modelserve.redis.outcome"] == "error"

    def test_upstream_429_then_success(self, trained: Workspace, otel_env: Receiver) -> None:
        """An upstream 429 (Retry-After: 0) then 200: two attempt spans under features, retry 0 and 1; the
        upstream saw a traceparent of this trace with the attempt's span id; the exemplar names an exported trace."""
        body = sample(trained, "production")["request"]
        with features_upstream(trained, refusals=1) as (settings, seen), serving(create_app(settings)) as client:
            r = client.post("/predict", json=body, headers={"traceparent": INCOMING})
            assert r.status_code == 200, r.text
            spans = flushed(otel_env, INCOMING_TRACE, "POST /predict")
            scrape = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
        print(tree(spans))
        features_span = one(spans, "features")
        assert features_span.attributes["modelserve.feature.tier"] == "upstream"
        attempts = [s for s in spans if s.name == "upstream GET"]
        assert [a.attributes["modelserve.retry"] for a in attempts] == [0, 1]
        assert all(a.parent == features_span.span_id for a in attempts)
        assert attempts[0].attributes["http.response.status_code"] == 429
        assert attempts[0].attributes["modelserve.upstream.retry_after_seconds"] == 0.0
        assert attempts[1].attributes["http.response.status_code"] == 200
        assert "modelserve.retry.waited_seconds" in attempts[1].attributes
        assert [h.split("-")[1] for h, _ in seen if h] == [INCOMING_TRACE, INCOMING_TRACE]
        assert [h.split("-")[2] for h, _ in seen if h] == [a.span_id for a in attempts]

        assert scrape.headers["content-type"].startswith("application/openmetrics-text")
        bucket = r"^modelserve_(?:http_request_duration|prediction_latency)_seconds_bucket\{[^}]*\} \S+"
        exemplars = re.findall(bucket + r' # \{trace_id="([0-9a-f]{32})"\}', scrape.text, re.MULTILINE)
        assert INCOMING_TRACE in exemplars
        assert set(exemplars) <= {s.trace_id for s in otel_env.spans}

    def test_new_trace_without_traceparent(self, trained: Workspace, otel_env: Receiver) -> None:
        """Without an incoming traceparent the server span is a root of a new trace; a 404 route is 'unmatched'."""
        with serving(create_app(trained.settings())) as client:
            r = client.post("/predict", json=sample(trained, "production")["request"])
            assert r.status_code == 200
            assert client.get("/nowhere").status_code == 404
            deadline = time.monotonic() + 10
            while not otel_env.server_spans():
                tracing.force_flush()
                assert time.monotonic() < deadline
                time.sleep(0.02)
        (server,) = otel_env.server_spans()
        assert server.parent == ""
        assert server.trace_id != INCOMING_TRACE
        assert any(s.name == "GET unmatched" for s in otel_env.spans)

    def test_one_row_v2_infer_has_the_predict_children(self, trained: Workspace, otel_env: Receiver) -> None:
        """A one-row V2 infer (answered on its own short path) has decode, features and inference children."""
        m = manifest(trained, "production")
        body = {"inputs": v2_inputs(m, [sample(trained, "production")["request"]])}
        with serving(create_app(trained.settings())) as client:
            r = client.post("/v2/models/modelserve/infer", json=body, headers={"traceparent": INCOMING})
            assert r.status_code == 200, r.text
            spans = flushed(otel_env, INCOMING_TRACE, "POST /v2/models/{name}/infer")
        server = one(spans, "POST /v2/models/{name}/infer")
        assert [s.name for s in children(spans, server)] == ["decode", "features", "inference"]
        inference = one(spans, "inference")
        assert inference.attributes["modelserve.rows"] == 1
        assert inference.attributes["modelserve.model_version"] == r.json()["model_version"]

    def test_unsampled_caller_means_no_spans(self, trained: Workspace, otel_env: Receiver) -> None:
        """Parent-based sampling: a traceparent with the sampled flag off exports nothing of that trace."""
        unsampled = "0af7651916cd43dd8448eb211c80319c"
        body = sample(trained, "production")["request"]
        with serving(create_app(trained.settings())) as client:
            r = client.post("/predict", json=body, headers={"traceparent": f"00-{unsampled}-b7ad6b7169203331-00"})
            assert r.status_code == 200
            assert client.post("/predict", json=body, headers={"traceparent": INCOMING}).status_code == 200
            flushed(otel_env, INCOMING_TRACE, "POST /predict")
        assert otel_env.trace(unsampled) == []

    def test_shadow_is_its_own_trace_linked_to_the_request(self, workspace: Workspace, otel_env: Receiver) -> None:
        """The shadow run (after the answer) is a span of its own trace, linked to the request's trace."""
        app = create_app(workspace.settings())
        with serving(app) as client:
            shadow = app.state.container.rollout.shadow
            assert shadow.candidate is not None
            r = client.post("/predict", json=sample(workspace)["request"], headers={"traceparent": INCOMING})
            assert r.status_code == 200
            deadline = time.monotonic() + 10
            while shadow.counts["ok"] < 1:
                assert time.monotonic() < deadline, "the shadow never ran"
                time.sleep(0.01)
            while not [s for s in otel_env.spans if s.name == "shadow"]:
                tracing.force_flush()
                assert time.monotonic() < deadline, "no shadow span"
                time.sleep(0.02)
        (span,) = [s for s in otel_env.spans if s.name == "shadow"]
        assert span.trace_id != INCOMING_TRACE and span.parent == ""
        assert span.links == [INCOMING_TRACE]
        assert span.attributes["modelserve.shadow_version"] == shadow.candidate.version

    def test_shed_request(self, trained: Workspace, otel_env: Receiver) -> None:
        """A shed request (a deadline already past) is a server span with status 503, the admission outcome and
        its queue time, and no decode, features or inference children: nothing ran."""
        past = {"X-Request-Deadline-Ms": str(int(time.time() * 1000) - 5000), "traceparent": INCOMING}
        with serving(create_app(trained.settings())) as client:
            r = client.post("/predict", json=sample(trained, "production")["request"], headers=past)
            assert r.status_code == 503 and r.headers["Retry-After"]
            spans = flushed(otel_env, INCOMING_TRACE, "POST /predict")
        server = one(spans, "POST /predict")
        assert server.attributes["modelserve.admission.outcome"] == "shed:deadline"
        assert server.attributes["modelserve.admission.queue_seconds"] >= 0
        assert server.attributes["http.response.status_code"] == 503
        assert children(spans, server) == []


class TestBatch:
    def test_a_span_per_chunk_and_per_sink_post(
        self, trained: Workspace, tmp_path, otel_env: Receiver, httpserver: HTTPServer
    ) -> None:
        """A batch run is one trace: a span per chunk, under each its sink POSTs, whose requests carry traceparent."""
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq

        from app.jobs.batch import BatchOptions, run_batch
        from app.training.data import generate_requests

        users = pd.read_parquet(trained.feature_table)
        rows = [
            {"user_id": b["user_id"], **b["features"], "request_id": f"r-{i}"}
            for i, b in enumerate(generate_requests(300, seed=5, users_df=users))
        ]
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet")
        seen: list[str] = []

        def sink(request: Request) -> Response:
            seen.append(request.headers.get("traceparent", ""))
            return Response("{}", status=200, content_type="application/json")

        httpserver.expect_request("/sink", method="POST").respond_with_handler(sink)
        options = BatchOptions(
            tmp_path / "in.parquet",
            tmp_path / "out.parquet",
            chunk_rows=100,
            sink=httpserver.url_for("/sink"),
            sink_batch=50,
            progress=False,
        )
        run_batch(trained.settings(), options)  # sets tracing up from OTEL_*, shuts it down (exporting) at the end
        assert not tracing.enabled
        (root,) = [s for s in otel_env.spans if s.name == "batch"]
        spans = otel_env.trace(root.trace_id)
        print(tree(spans))
        chunks = [s for s in spans if s.name == "batch chunk"]
        assert sorted(c.attributes["modelserve.chunk"] for c in chunks) == [0, 1, 2]
        assert all(c.parent == root.span_id for c in chunks)
        posts = [s for s in spans if s.name == "sink POST"]
        assert len(posts) == 6 == len(seen)
        assert {p.parent for p in posts} == {c.span_id for c in chunks}
        assert sorted(h.split("-")[2] for h in seen) == sorted(p.span_id for p in posts)


class TestRatioSampling:
    def test_dropped_requests_skip_the_sdk_and_keep_their_trace_id(
        self, trained: Workspace, otel_env: Receiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
    ) -> None:
        """parentbased_traceidratio 0.5, no incoming traceparent: a request is exported iff its trace id's low 64
        bits are below the ratio's bound (the SDK's rule). A dropped one exports nothing, yet its prediction record
        carries its trace id and the upstream sees that trace id, not sampled; a kept one the upstream sees sampled.
        The shadow runs (root spans of their own) are decided by the same rule."""
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")
        bound = round(0.5 * (1 << 64))
        body = sample(trained, "production")["request"]
        n = 40
        with features_upstream(trained, tmp_path / "log") as (settings, seen):
            app = create_app(settings)
            with serving(app) as client:
                for i in range(n):
                    r = client.post("/predict", json={**body, "request_id": f"ratio-{i}"})
                    assert r.status_code == 200, r.text
                app.state.container.prediction_log.close_sync()
                tracing.force_flush()
        traces = prediction_traces(tmp_path / "log")
        assert len(traces) == n and len(set(traces)) == n
        kept = [t for t in traces if int(t, 16) & ((1 << 64) - 1) < bound]
        assert 0 < len(kept) < n  # 2**-40 each way
        assert {s.trace_id for s in otel_env.server_spans()} == set(kept)
        assert all(int(s.trace_id, 16) & ((1 << 64) - 1) < bound for s in otel_env.spans)  # shadow runs too
        request_spans = [s for s in otel_env.spans if s.name != "shadow"]  # the shadow run is a trace of its own
        assert {s.trace_id for s in request_spans} == set(kept)  # a dropped request has no child spans either
        assert len(seen) == n
        for (header, _), trace_id in zip(seen, traces, strict=True):
            version, tid, span_id, flags = header.split("-")
            assert (version, tid, len(span_id)) == ("00", trace_id, 16)
            assert (int(flags, 16) & 1) == (trace_id in kept)  # the sampled bit (0x02 says the id is random)


class TestUnsampledCaller:
    @pytest.mark.parametrize("sampler", [None, ("parentbased_traceidratio", "1.0")])
    def test_kept_trace_id_flags_00_downstream_and_no_span(
        self,
        trained: Workspace,
        otel_env: Receiver,
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Any,
        sampler: tuple[str, str] | None,
    ) -> None:
        """An incoming traceparent with the sampled flag off, under a parent-based sampler (the default, or
        ratio 1.0: the caller's decision wins): nothing of that trace is exported; the prediction record carries
        its trace id; the upstream sees that trace id, not sampled (the caller's random-trace-id bit kept) and the
        caller's tracestate; inside the request there is the trace id and no span (the SDK was not called)."""
        if sampler is not None:
            monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler[0])
            monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", sampler[1])
        plain, random_bit = "0af7651916cd43dd8448eb211c80319c", "5c0ffee5c0ffee5c0ffee5c0ffee5c0f"
        calls = [
            ({"traceparent": f"00-{plain}-b7ad6b7169203331-00"}, plain, "00", None),
            (
                {"traceparent": f"00-{random_bit}-b7ad6b7169203331-02", "tracestate": "vendor=abc,x=1"},
                random_bit,
                "02",
                "vendor=abc,x=1",
            ),
        ]
        body = sample(trained, "production")["request"]
        inside: list[tuple[str | None, str | None]] = []
        with features_upstream(trained, tmp_path / "log") as (settings, seen):
            app = create_app(settings)
            with serving(app) as client:
                app.state.container.predictor.add_listener(lambda record, model: inside.append(current_trace_ids()))
                for headers, _, _, _ in calls:
                    assert client.post("/predict", json=body, headers=headers).status_code == 200
                assert client.post("/predict", json=body, headers={"traceparent": INCOMING}).status_code == 200
                flushed(otel_env, INCOMING_TRACE, "POST /predict")
                app.state.container.prediction_log.close_sync()
        assert prediction_traces(tmp_path / "log") == [plain, random_bit, INCOMING_TRACE]
        assert inside[:2] == [(plain, None), (random_bit, None)]
        assert inside[2][0] == INCOMING_TRACE and inside[2][1] is not None  # sampled: its server span is current
        for trace_id in (plain, random_bit):
            assert otel_env.trace(trace_id) == []
        assert len(seen) == 3
        for (header, state), (_, trace_id, flags, tracestate) in zip(seen, calls, strict=False):
            version, tid, span_id, sent_flags = header.split("-")
            assert (version, tid, sent_flags, state) == ("00", trace_id, flags, tracestate)
            assert len(span_id) == 16 and span_id != "b7ad6b7169203331"
        assert seen[2][0].split("-")[1] == INCOMING_TRACE and seen[2][0].endswith("-01")


class TestExporter:
    def test_exports_through_the_proxy_and_netrc_of_the_environment(
        self, trained: Workspace, otel_env: Receiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
    ) -> None:
        """The exporter's session reads the environment once at set-up, as requests would on every POST:
        HTTP_PROXY sends the export through the proxy, a netrc entry for the collector's host authenticates it."""
        host = otel_env.url.removeprefix("http://").split(":")[0]
        proxy = Receiver(proxy_for=otel_env.url)
        proxy.thread.start()
        try:
            (tmp_path / "netrc").write_text(f"machine {host} login collector password s3cret\n")
            monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
            monkeypatch.delenv("NO_PROXY", raising=False)
            monkeypatch.delenv("no_proxy", raising=False)
            with serving(create_app(trained.settings())) as client:
                r = client.post(
                    "/predict", json=sample(trained, "production")["request"], headers={"traceparent": INCOMING}
                )
                assert r.status_code == 200
                flushed(proxy, INCOMING_TRACE, "POST /predict")
        finally:
            proxy.server.shutdown()
            proxy.server.server_close()
        assert otel_env.spans == []  # all of it went through the proxy
        assert proxy.seen and all(path == f"{otel_env.url}/v1/traces" for path, _ in proxy.seen)
        assert all(auth == "Basic " + base64.b64encode(b"collector:s3cret").decode() for _, auth in proxy.seen)

    @pytest.mark.parametrize(
        ("env", "expected"), [({}, (4096, 2048)), ({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "100"}, (2048, 100))]
    )
    def test_batches_of_2048_unless_the_environment_sets_them(
        self, otel_env: Receiver, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: tuple[int, int]
    ) -> None:
        """Fewer, larger POSTs than the SDK's 512 by default; OTEL_BSP_* still decide when set."""
        monkeypatch.delenv("OTEL_BSP_MAX_QUEUE_SIZE", raising=False)
        monkeypatch.delenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        assert tracing.setup()
        try:
            (processor,) = tracing._provider._active_span_processor._span_processors
            batching = processor._batch_processor
            assert (batching._max_queue_size, batching._max_export_batch_size) == expected
        finally:
            tracing.shutdown()

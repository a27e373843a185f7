"""Admission limits and deadlines on gRPC ``ModelInfer``, against a real ``modelserve serve`` and real clients.

The server has one slot (``MODELSERVE_MAX_IN_FLIGHT=1``) and gets its store
features from a local upstream that answers users named ``slow-*`` only after
``HOLD_SECONDS``: a REST ``/predict`` for such a user holds the worker's only
slot while gRPC calls arrive. The slot is shared, so they wait in line and are
refused without running; health calls still answer. Whether anything ran is
read from the server's own counters (``modelserve_predictions_total``) and the
upstream's log (a call that ran would have fetched its user's features).

Tracing is on (a local OTLP receiver), so the refusals' server spans are
checked too.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.e2e.test_grpc_tritonclient import GrpcServer, raw_inputs, typed_request
from tests.integration.test_tracing import children, flushed, one
from tests.support.metrics import metric_value
from tests.support.workspace import manifest

grpcclient = pytest.importorskip("tritonclient.grpc")
import grpc  # noqa: E402  (after the skip)
from google.rpc import error_details_pb2, status_pb2  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.e2e

HOLD_SECONDS = 4.0
"""How long the upstream keeps a ``slow-*`` user's features: the slot is held that long."""
QUEUE_MS = 600
STORE = {"age": 30, "income": 40000.0, "days_since_signup": 100, "country": "US"}
TRACE = "0af7651916cd43dd8448eb211c80319c"


class Upstream:
    """The feature API: every user known, ``slow-*`` ones answered late; remembers who was asked for."""

    def __init__(self) -> None:
        self.users: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        user = request.path.split("/")[2]
        with self.lock:
            self.users.append(user)
        if user.startswith("slow-"):
            time.sleep(HOLD_SECONDS)
        return Response(json.dumps({"user_id": user, "features": STORE}), content_type="application/json")


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[HTTPServer, Upstream]]:
    server = HTTPServer(threaded=True)
    server.start()
    handler = Upstream()
    server.expect_request(re.compile(r"/users/[^/]+/features")).respond_with_handler(handler)
    yield server, handler
    server.clear()
    server.stop()


@pytest.fixture(scope="module")
def server(trained, upstream, receiver, tmp_path_factory) -> Iterator[GrpcServer]:
    http, _ = upstream
    env = trained.env(
        MODELSERVE_UPSTREAM_URL=http.url_for("/").rstrip("/"),
        MODELSERVE_FEATURE_BUDGET_MS=str(HOLD_SECONDS * 3000),
        MODELSERVE_UPSTREAM_TIMEOUT_MS=str(HOLD_SECONDS * 3000),
        MODELSERVE_MAX_IN_FLIGHT="1",
        MODELSERVE_MAX_QUEUE_MS=str(QUEUE_MS),
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_BSP_SCHEDULE_DELAY="50",
    )
    with GrpcServer(env, tmp_path_factory.mktemp("grpc-admission") / "server.log") as srv:
        srv.wait_ready()
        yield srv


def request(trained, user: str) -> dict[str, Any]:
    body = manifest(trained, "production")["sample"]["request"]
    features = {k: 0.5 if v is None else v for k, v in body["features"].items()}
    return {"user_id": user, "features": features}


def metrics(server: GrpcServer) -> str:
    return httpx.get(server.url + "/metrics", timeout=10).text


class Holder:
    """A REST /predict for a slow user, in a thread: it holds the worker's one slot until the upstream answers."""

    def __init__(self, server: GrpcServer, body: dict[str, Any], upstream: Upstream) -> None:
        self.status: int | None = None
        self.thread = threading.Thread(target=self._run, args=(server, body), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while body["user_id"] not in upstream.users:  # the request is inside: admitted, fetching features
            assert time.monotonic() < deadline, "the holding request never reached the upstream"
            time.sleep(0.01)

    def _run(self, server: GrpcServer, body: dict[str, Any]) -> None:
        self.status = httpx.post(server.url + "/predict", json=body, timeout=HOLD_SECONDS * 5).status_code

    def join(self) -> int | None:
        self.thread.join(HOLD_SECONDS * 5)
        return self.status


def test_saturated_server_refuses_grpc_calls_without_running_them(server, trained, upstream, receiver):
    """With the one slot held by a REST request: a tritonclient call with a short timeout is DEADLINE_EXCEEDED, one
    without a deadline is UNAVAILABLE with retry info once it has queued MAX_QUEUE_MS; neither runs (no prediction,
    no feature lookup), both are counted as shed; health and readiness still answer; the in-flight gauge counts
    the REST request. The refused call's server span (in the caller's trace) says UNAVAILABLE and shed, with no
    decode, features or inference under it."""
    _, handler = upstream
    before = metrics(server)
    predictions = metric_value(before, "modelserve_predictions_total")
    client = grpcclient.InferenceServerClient(url=server.target)
    meta = client.get_model_metadata("modelserve")
    holder = Holder(server, request(trained, "slow-1"), handler)
    try:
        assert metric_value(metrics(server), "modelserve_requests_in_flight") == 1
        with grpc.insecure_channel(server.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            serving = health_pb2.HealthCheckResponse.SERVING
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == serving
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=5).ready

            # A real client's own deadline (grpc-timeout), shorter than the queue time: refused when it runs out.
            with pytest.raises(InferenceServerException) as exc:
                client.infer("modelserve", raw_inputs(meta, [request(trained, "u-late")]), client_timeout=0.25)
            assert exc.value.status() == "StatusCode.DEADLINE_EXCEEDED"

            # No deadline: waits its queue time, then UNAVAILABLE with when to retry.
            message = typed_request(meta, [request(trained, "u-queued")])
            t0 = time.monotonic()
            with pytest.raises(grpc.RpcError) as rpc:
                stub.ModelInfer(message, metadata=[("traceparent", f"00-{TRACE}-00f067aa0ba902b7-01")])
            waited = time.monotonic() - t0
            error = rpc.value
            assert error.code() == grpc.StatusCode.UNAVAILABLE and "overloaded" in error.details()
            assert waited >= QUEUE_MS / 1000 * 0.9
            trailers = dict(error.trailing_metadata())
            assert trailers["retry-after"] == "1"
            status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
            info = error_details_pb2.RetryInfo()
            assert status.details[0].Unpack(info) and info.retry_delay.seconds == 1
    finally:
        assert holder.join() == 200
        client.close()
    after = metrics(server)
    assert metric_value(after, "modelserve_predictions_total") == predictions + 1  # the holder's only
    assert handler.users.count("u-late") == handler.users.count("u-queued") == 0
    assert metric_value(after, "modelserve_requests_shed_total", {"reason": "deadline"}) == 1
    assert metric_value(after, "modelserve_requests_shed_total", {"reason": "overloaded"}) == 1
    assert metric_value(after, "modelserve_requests_in_flight") == 0
    unavailable = {"method": "ModelInfer", "code": "UNAVAILABLE"}
    assert metric_value(after, "modelserve_grpc_requests_total", unavailable) == 1
    spans = flushed(receiver, TRACE, "inference.GRPCInferenceService/ModelInfer")
    span = one(spans, "inference.GRPCInferenceService/ModelInfer")
    assert span.parent == "00f067aa0ba902b7"
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    assert span.attributes["modelserve.admission.outcome"] == "shed:overloaded"
    assert span.attributes["modelserve.admission.queue_seconds"] >= QUEUE_MS / 1000 * 0.9
    assert children(spans, span) == []


def test_deadline_passing_while_features_load_never_runs_inference(server, trained, upstream):
    """Admitted, then the client's deadline passes while its features are fetched: DEADLINE_EXCEEDED for the
    client, and no prediction is made for it."""
    _, handler = upstream
    predictions = metric_value(metrics(server), "modelserve_predictions_total")
    client = grpcclient.InferenceServerClient(url=server.target)
    try:
        meta = client.get_model_metadata("modelserve")
        with pytest.raises(InferenceServerException) as exc:
            client.infer("modelserve", raw_inputs(meta, [request(trained, "slow-2")]), client_timeout=0.5)
        assert exc.value.status() == "StatusCode.DEADLINE_EXCEEDED"
        assert "slow-2" in handler.users  # it was admitted and got as far as its feature lookup
        time.sleep(HOLD_SECONDS + 0.5)  # the lookup has finished: had the call still been running, it would infer
    finally:
        client.close()
    assert metric_value(metrics(server), "modelserve_predictions_total") == predictions

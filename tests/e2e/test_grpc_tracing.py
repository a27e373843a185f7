"""Traces of gRPC calls: a real ``modelserve serve`` exporting OTLP/HTTP to the receiver the REST tracing tests use.

The calls come from ``tritonclient.grpc`` (its ``headers`` travel as gRPC
metadata) and its generated stubs; the receiver decodes the exported spans
with the OTLP definitions.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.test_grpc_tritonclient import GrpcServer, raw_inputs
from tests.integration.test_tracing import children, flushed, one, tree
from tests.support.workspace import manifest

grpcclient = pytest.importorskip("tritonclient.grpc")
import grpc  # noqa: E402  (after the skip)
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.e2e

INFER = "inference.GRPCInferenceService/ModelInfer"
CALLER = "00f067aa0ba902b7"


def traceparent(trace_id: str, sampled: bool = True) -> str:
    return f"00-{trace_id}-{CALLER}-{'01' if sampled else '00'}"


@pytest.fixture(scope="module")
def server(trained, receiver, tmp_path_factory) -> Iterator[GrpcServer]:
    env = trained.env(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_SERVICE_NAME="modelserve-grpc-test",
        OTEL_BSP_SCHEDULE_DELAY="50",
    )
    with GrpcServer(env, tmp_path_factory.mktemp("grpc-tracing") / "server.log") as srv:
        srv.wait_ready()
        yield srv


@pytest.fixture(scope="module")
def client(server) -> Iterator[object]:
    c = grpcclient.InferenceServerClient(url=server.target)
    yield c
    c.close()


def rows(trained, n: int) -> list[dict]:
    body = manifest(trained, "production")["sample"]["request"]
    features = {k: 0.5 if v is None else v for k, v in body["features"].items()}
    return [{"user_id": body["user_id"], "features": features}] * n


def test_model_infer_span_tree(client, receiver, trained):
    """A ModelInfer of two rows continues the caller's trace: a server span (method, status, model version, admission)
    over decode, features and inference (version, rows), the same children REST's V2 route has."""
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    meta = client.get_model_metadata("modelserve")
    headers = {"traceparent": traceparent(trace_id), "tracestate": "vendor=1"}
    result = client.infer("modelserve", raw_inputs(meta, rows(trained, 2)), headers=headers)
    version = result.get_response().model_version
    spans = flushed(receiver, trace_id, INFER)
    print(tree(spans))
    server = one(spans, INFER)
    assert server.parent == CALLER
    assert server.kind == 2  # SERVER
    assert server.attributes["rpc.system"] == "grpc"
    assert server.attributes["rpc.service"] == "inference.GRPCInferenceService"
    assert server.attributes["rpc.method"] == "ModelInfer"
    assert server.attributes["rpc.grpc.status_code"] == 0
    assert server.attributes["modelserve.model_version"] == version
    assert server.attributes["modelserve.admission.outcome"] == "admitted"
    assert server.attributes["resource.service.name"] == "modelserve-grpc-test"
    assert [s.name for s in children(spans, server)] == ["decode", "features", "inference"]
    features = one(spans, "features")
    assert features.attributes["modelserve.feature.tier"] in ("table", "memory")  # computed, or cached since
    assert features.attributes["modelserve.users"] == 2
    inference = one(spans, "inference")
    assert inference.attributes["modelserve.rows"] == 2
    assert inference.attributes["modelserve.model_version"] == version


def test_client_errors_and_health_calls_are_spans(client, server, receiver, trained):
    """A bad input is a span with INVALID_ARGUMENT (not an error of the server's), stopped at decode; a health check
    is its own span, named by the health service."""
    trace_id = "5bf92f3577b34da6a3ce929d0e0e4737"
    meta = client.get_model_metadata("modelserve")
    inputs = [i for i in raw_inputs(meta, rows(trained, 1)) if i.name() != "user_id"]
    with pytest.raises(InferenceServerException) as exc:
        client.infer("modelserve", inputs, headers={"traceparent": traceparent(trace_id)})
    assert exc.value.status() == "StatusCode.INVALID_ARGUMENT"
    spans = flushed(receiver, trace_id, INFER)
    server_span = one(spans, INFER)
    assert server_span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert [s.name for s in children(spans, server_span)] == ["decode"]

    health_trace = "6bf92f3577b34da6a3ce929d0e0e4738"
    with grpc.insecure_channel(server.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        stub.Check(health_pb2.HealthCheckRequest(), timeout=5, metadata=[("traceparent", traceparent(health_trace))])
    check = one(flushed(receiver, health_trace, "grpc.health.v1.Health/Check"), "grpc.health.v1.Health/Check")
    assert check.attributes["rpc.service"] == "grpc.health.v1.Health"
    assert check.attributes["rpc.grpc.status_code"] == 0


def test_unsampled_caller_means_no_spans(client, receiver, trained):
    """A caller that did not sample its trace gets none of ours (parent-based sampling)."""
    quiet, marker = "7bf92f3577b34da6a3ce929d0e0e4739", "8bf92f3577b34da6a3ce929d0e0e473a"
    meta = client.get_model_metadata("modelserve")
    inputs = raw_inputs(meta, rows(trained, 1))
    client.infer("modelserve", inputs, headers={"traceparent": traceparent(quiet, sampled=False)})
    client.infer("modelserve", inputs, headers={"traceparent": traceparent(marker)})
    flushed(receiver, marker, INFER)  # exported after the quiet one, if that had been
    assert receiver.trace(quiet) == []

"""gRPC V2 (``inference.GRPCInferenceService``) and gRPC health checking against a real ``modelserve serve``.

The clients are ``tritonclient.grpc`` (raw tensors, its default), its generated
stubs (typed ``contents``, trailing metadata) and ``grpc_health.v1``. This
process never imports ``app.rpc``: its generated messages and tritonclient's
share the ``inference`` package in protobuf's default pool.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from harness import ServerProcess, free_port
from tests.support.workspace import manifest

grpcclient = pytest.importorskip("tritonclient.grpc")
import grpc  # noqa: E402  (after the skip)
from google.rpc import error_details_pb2, status_pb2  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException, triton_to_np_dtype  # noqa: E402

pytestmark = pytest.mark.e2e

TYPED = {"FP32": "fp32_contents", "INT64": "int64_contents", "BOOL": "bool_contents", "BYTES": "bytes_contents"}


class GrpcServer(ServerProcess):
    def __init__(self, env: dict[str, str], log_path: Any) -> None:
        self.grpc_port = free_port()
        super().__init__({**env, "MODELSERVE_GRPC_PORT": str(self.grpc_port)}, log_path)
        self.target = f"127.0.0.1:{self.grpc_port}"


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory) -> Any:
    return tmp_path_factory.mktemp("grpc-log")


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory, log_dir) -> Iterator[GrpcServer]:
    env = trained.env(MODELSERVE_LOG_DIR=str(log_dir), MODELSERVE_LOG_FLUSH_SECONDS="0.1")
    with GrpcServer(env, tmp_path_factory.mktemp("grpc") / "server.log") as srv:
        srv.wait_ready()
        yield srv


@pytest.fixture(scope="module")
def client(server):
    c = grpcclient.InferenceServerClient(url=server.target)
    yield c
    c.close()


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.target) as ch:
        yield ch


@pytest.fixture(scope="module")
def requests(trained) -> list[dict[str, Any]]:
    """/predict bodies for a few users, every feature given (FP32 cannot carry a null)."""
    import pandas as pd

    sample = manifest(trained, "production")["sample"]["request"]
    users = list(pd.read_parquet(trained.feature_table)["user_id"][:5])
    out = []
    for i, user in enumerate(users):
        features = {k: 0.5 if v is None else v for k, v in sample["features"].items()}
        for name, value in features.items():
            if isinstance(value, float):
                features[name] = value * (1 + i) / 3
        out.append({"user_id": user, "features": features})
    return out


def columns(metadata: Any, requests: list[dict[str, Any]]) -> list[tuple[str, str, list[Any]]]:
    """(name, datatype, values) per input the model metadata lists."""
    return [
        (m.name, m.datatype, [r["user_id"] if m.name == "user_id" else r["features"][m.name] for r in requests])
        for m in metadata.inputs
    ]


def raw_inputs(metadata: Any, requests: list[dict[str, Any]]) -> list[Any]:
    """tritonclient inputs from numpy arrays: sent as raw_input_contents."""
    inputs = []
    for name, datatype, values in columns(metadata, requests):
        if datatype == "BYTES":
            array = np.array([v.encode() for v in values], dtype=np.object_)
        else:
            array = np.array(values, dtype=triton_to_np_dtype(datatype))
        inp = grpcclient.InferInput(name, [len(values)], datatype)
        inp.set_data_from_numpy(array)
        inputs.append(inp)
    return inputs


def typed_request(metadata: Any, requests: list[dict[str, Any]], **fields: Any) -> Any:
    """A ModelInferRequest with typed contents (no raw_input_contents)."""
    message = service_pb2.ModelInferRequest(model_name="modelserve", **fields)
    for name, datatype, values in columns(metadata, requests):
        tensor = message.inputs.add(name=name, datatype=datatype, shape=[len(values)])
        if datatype == "BYTES":
            values = [v.encode() for v in values]
        getattr(tensor.contents, TYPED[datatype]).extend(values)
    return message


def predict(server: GrpcServer, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [httpx.post(server.url + "/predict", json=r).json() for r in requests]


class TestInferenceService:
    def test_live_ready_and_metadata(self, client):
        """The client sees a live, ready server, ready models under each name and the REST metadata."""
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("modelserve")
        assert client.is_model_ready("production", "v2")
        assert client.get_server_metadata().name == "modelserve"
        meta = client.get_model_metadata("modelserve")
        assert meta.inputs[0].name == "user_id" and meta.inputs[0].datatype == "BYTES"
        assert list(meta.inputs[0].shape) == [-1]
        assert [o.name for o in meta.outputs] == ["label", "probability"]
        assert meta.platform == "onnxruntime_onnx"

    def test_raw_batch_matches_predict(self, client, server, requests):
        """A batch of N rows as raw_input_contents answers /predict's labels and probabilities, row by row."""
        meta = client.get_model_metadata("modelserve")
        result = client.infer("modelserve", raw_inputs(meta, requests), request_id="grpc-batch")
        want = predict(server, requests)
        assert result.get_response().id == "grpc-batch"
        assert result.as_numpy("label").tolist() == [w["prediction"] for w in want]
        assert result.as_numpy("probability").tolist() == [w["probability"] for w in want]
        assert result.get_response().model_version == want[0]["model_version"]

    def test_typed_contents_match_predict(self, client, channel, server, requests):
        """Typed contents (one row, then N) answer /predict's results in typed contents."""
        meta = client.get_model_metadata("modelserve")
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for rows in (requests[:1], requests):
            response = stub.ModelInfer(typed_request(meta, rows), timeout=10)
            want = predict(server, rows)
            assert not response.raw_output_contents
            by_name = {o.name: o for o in response.outputs}
            assert list(by_name["label"].contents.int64_contents) == [w["prediction"] for w in want]
            assert list(by_name["label"].shape) == [len(rows)]
            probs = np.array(by_name["probability"].contents.fp32_contents, dtype=np.float32)
            assert probs.tolist() == [w["probability"] for w in want]

    def test_batch_raw_and_typed_with_nan_match_predict(self, client, channel, server, requests):
        """100 rows, a nullable float NaN in every other one: raw and typed contents answer /predict's per row."""
        meta = client.get_model_metadata("modelserve")
        v2 = httpx.get(server.url + "/v2/models/modelserve").json()
        floats = [m.name for m in meta.inputs if m.datatype == "FP32"]
        nullable = [n for n in v2["parameters"]["nullable"] if n in floats]
        if not nullable:
            pytest.skip("the demo model has no nullable float feature")
        name = nullable[0]
        rows = [requests[i % len(requests)] for i in range(100)]
        rows = [{**r, "features": {**r["features"], name: math.nan if i % 2 else 0.75}} for i, r in enumerate(rows)]
        want = predict(
            server, [{**r, "features": {**r["features"], name: None if i % 2 else 0.75}} for i, r in enumerate(rows)]
        )
        raw = client.infer("modelserve", raw_inputs(meta, rows))
        assert raw.as_numpy("label").tolist() == [w["prediction"] for w in want]
        assert raw.as_numpy("probability").tolist() == [w["probability"] for w in want]
        typed = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(typed_request(meta, rows), timeout=10)
        by_name = {o.name: o for o in typed.outputs}
        assert list(by_name["label"].contents.int64_contents) == [w["prediction"] for w in want]
        probs = np.array(by_name["probability"].contents.fp32_contents, dtype=np.float32)
        assert probs.tolist() == [w["probability"] for w in want]

    def test_batch_bad_row_is_named(self, client, channel, server, requests):
        """NaN for a non-nullable float in row 57 of a typed batch is INVALID_ARGUMENT naming the input and row."""
        meta = client.get_model_metadata("modelserve")
        nullable = set(httpx.get(server.url + "/v2/models/modelserve").json()["parameters"]["nullable"])
        name = next(m.name for m in meta.inputs if m.datatype == "FP32" and m.name not in nullable)
        rows = [requests[i % len(requests)] for i in range(100)]
        rows[57] = {**rows[57], "features": {**rows[57]["features"], name: math.nan}}
        with pytest.raises(grpc.RpcError) as exc:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(typed_request(meta, rows), timeout=10)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"{name}[57]" in exc.value.details()

    def test_requested_output_and_version(self, client, requests):
        """A requested output subset and an explicit version go through the client."""
        meta = client.get_model_metadata("modelserve", "v2")
        result = client.infer(
            "modelserve",
            raw_inputs(meta, requests[:1]),
            model_version="v2",
            outputs=[grpcclient.InferRequestedOutput("probability")],
        )
        assert result.as_numpy("label") is None
        assert result.as_numpy("probability").shape == (1,)

    def test_bad_input_is_invalid_argument_naming_it(self, client, requests):
        """A missing input and a wrong datatype are INVALID_ARGUMENT, the message naming each input."""
        meta = client.get_model_metadata("modelserve")
        inputs = [i for i in raw_inputs(meta, requests[:1]) if i.name() != "user_id"]
        with pytest.raises(InferenceServerException) as exc:
            client.infer("modelserve", inputs)
        assert exc.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "user_id" in exc.value.message() and "missing input" in exc.value.message()
        float_input = next(m for m in meta.inputs if m.datatype == "FP32").name
        inputs = raw_inputs(meta, requests[:1])
        for i, inp in enumerate(inputs):
            if inp.name() == float_input:
                inputs[i] = grpcclient.InferInput(float_input, [1], "BOOL")
                inputs[i].set_data_from_numpy(np.array([True]))
        with pytest.raises(InferenceServerException) as exc:
            client.infer("modelserve", inputs)
        assert exc.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert float_input in exc.value.message() and "BOOL not accepted" in exc.value.message()

    def test_unknown_model_and_version_are_not_found(self, client, requests):
        """An unknown model or version is NOT_FOUND for inference, metadata and readiness alike."""
        meta = client.get_model_metadata("modelserve")
        with pytest.raises(InferenceServerException) as exc:
            client.infer("nope", raw_inputs(meta, requests[:1]))
        assert exc.value.status() == "StatusCode.NOT_FOUND" and "nope" in exc.value.message()
        with pytest.raises(InferenceServerException) as exc:
            client.get_model_metadata("modelserve", "v9")
        assert exc.value.status() == "StatusCode.NOT_FOUND"
        with pytest.raises(InferenceServerException) as exc:
            client.is_model_ready("nope")
        assert exc.value.status() == "StatusCode.NOT_FOUND"

    def test_predictions_reach_the_prediction_log(self, client, log_dir, requests):
        """A gRPC batch is logged like a REST one: one record per row, its request id suffixed with the row."""
        meta = client.get_model_metadata("modelserve")
        client.infer("modelserve", raw_inputs(meta, requests[:2]), request_id="grpc-logged")
        deadline = time.monotonic() + 10
        ids: set[str] = set()
        while time.monotonic() < deadline and not {"grpc-logged:0", "grpc-logged:1"} <= ids:
            time.sleep(0.1)
            for path in log_dir.glob("predictions-*.jsonl"):
                ids |= {json.loads(line)["request_id"] for line in path.read_text().splitlines() if line}
        assert {"grpc-logged:0", "grpc-logged:1"} <= ids

    def test_calls_are_counted(self, client, server):
        """Every call lands in modelserve_grpc_requests_total by method and code."""
        client.is_server_live()
        text = httpx.get(server.url + "/metrics").text
        assert 'modelserve_grpc_requests_total{code="OK",method="ServerLive"}' in text
        assert 'modelserve_grpc_requests_total{code="NOT_FOUND",method="ModelInfer"}' in text

    def test_health_serving_when_ready(self, server, channel):
        """The health service says SERVING for the server and the inference service while /health/ready is 200."""
        assert httpx.get(server.url + "/health/ready").status_code == 200
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as exc:
            stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
        assert exc.value.code() == grpc.StatusCode.NOT_FOUND


def test_not_ready_is_unavailable_with_retry_info(trained, tmp_path, requests):
    """While warming up: health NOT_SERVING (and /health/ready 503), inference UNAVAILABLE with when to retry."""
    env = trained.env(MODELSERVE_WARMUP_DELAY_SECONDS="60")
    with GrpcServer(env, tmp_path / "server.log") as srv:
        srv.wait_live()
        with grpc.insecure_channel(srv.target) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            health = health_pb2_grpc.HealthStub(channel)
            answer = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert httpx.get(srv.url + "/health/ready").status_code == 503
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=5).live
            assert not stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=5).ready
            message = service_pb2.ModelInferRequest(model_name="modelserve")
            message.inputs.add(name="user_id", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"u")
            with pytest.raises(grpc.RpcError) as exc:
                stub.ModelInfer(message, timeout=5)
            error = exc.value
            assert error.code() == grpc.StatusCode.UNAVAILABLE and "not ready" in error.details()
            trailers = dict(error.trailing_metadata())
            assert int(trailers["retry-after"]) >= 1
            status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
            info = error_details_pb2.RetryInfo()
            assert status.details[0].Unpack(info) and info.retry_delay.seconds >= 1


def test_draining_is_not_serving(trained, tmp_path):
    """After SIGTERM, during the drain window: health NOT_SERVING and /health/ready 503, calls still answered."""
    env = trained.env(MODELSERVE_SHUTDOWN_DRAIN_SECONDS="5")
    with GrpcServer(env, tmp_path / "server.log") as srv:
        srv.wait_ready()
        with grpc.insecure_channel(srv.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            serving = health_pb2.HealthCheckResponse.SERVING
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == serving
            srv.signal()
            srv.poll_until(lambda: httpx.get(srv.url + "/health/ready").status_code == 503, 5, "draining")
            answer = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=5).live
        assert srv.wait(30) == 0

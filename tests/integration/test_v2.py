"""The Open Inference Protocol (V2) REST endpoints in-process: raw JSON edge cases from the spec."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.integration.test_api import metric_value
from tests.support.workspace import manifest as read_manifest
from tests.support.workspace import serving

DATATYPE = {"float": "FP32", "int": "INT64", "bool": "BOOL", "string": "BYTES"}


@pytest.fixture(scope="module")
def manifest(trained) -> dict[str, Any]:
    return read_manifest(trained, "production")


@pytest.fixture(scope="module")
def client(trained):
    with serving(create_app(trained.settings())) as c:
        yield c


@pytest.fixture(scope="module")
def users(trained) -> list[str]:
    import pandas as pd

    return list(pd.read_parquet(trained.feature_table)["user_id"][:3])


def request_features(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in manifest["features"] if f["source"] == "request"]


def v2_inputs(manifest: dict[str, Any], requests: list[dict[str, Any]], nested: bool = False) -> list[dict[str, Any]]:
    """V2 input tensors for /predict bodies: a user_id tensor and one per request feature."""
    n = len(requests)

    def tensor(name: str, datatype: str, values: list[Any]) -> dict[str, Any]:
        if nested:
            return {"name": name, "datatype": datatype, "shape": [n, 1], "data": [[v] for v in values]}
        return {"name": name, "datatype": datatype, "shape": [n], "data": values}

    out = [tensor("user_id", "BYTES", [r["user_id"] for r in requests])]
    for f in request_features(manifest):
        out.append(tensor(f["name"], DATATYPE[f["dtype"]], [r["features"][f["name"]] for r in requests]))
    return out


def replace(inputs: list[dict[str, Any]], name: str, **changes: Any) -> list[dict[str, Any]]:
    return [{**i, **changes} if i["name"] == name else i for i in inputs]


def first(manifest: dict[str, Any], dtype: str, nullable: bool | None = None) -> str:
    for f in request_features(manifest):
        if f["dtype"] == dtype and (nullable is None or f["nullable"] == nullable):
            return f["name"]
    pytest.skip(f"the demo model has no {dtype} request feature (nullable={nullable})")


def assert_v2_error(r, status: int, *names: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert isinstance(body["error"], str) and body["error"]
    for name in names:
        assert name in body["error"], body
    return body


class TestServerEndpoints:
    def test_server_metadata(self, client):
        """GET /v2 names the server, its version and the binary tensor extension."""
        body = client.get("/v2").json()
        assert body["name"] == "modelserve"
        assert body["version"]
        assert body["extensions"] == ["binary_tensor_data", "model_repository"]

    def test_live_and_ready(self, client):
        """The V2 probes answer 200 once the model is ready."""
        assert client.get("/v2/health/live").json() == {"live": True}
        r = client.get("/v2/health/ready")
        assert r.status_code == 200 and r.json() == {"ready": True}

    def test_not_ready_before_model(self, trained):
        """Before the model is warm the server and the model are 503, and infer is refused with 503."""
        app = create_app(trained.settings(warmup_delay_seconds=30))
        with TestClient(app) as c:  # not serving(): that waits for start-up to finish
            assert c.get("/v2/health/ready").status_code == 503
            assert c.get("/v2/health/live").status_code == 200
            r = c.post("/v2/models/modelserve/infer", json={"inputs": []})
            assert r.status_code == 503 and r.headers["retry-after"]


class TestModelMetadata:
    def test_inputs_follow_the_manifest(self, client, manifest):
        """One input per request feature with its V2 datatype, user_id first, and the two outputs."""
        body = client.get("/v2/models/modelserve").json()
        assert body["name"] == "modelserve"
        assert body["platform"] == "onnxruntime_onnx"
        assert "v2" in body["versions"]
        expected = [{"name": "user_id", "datatype": "BYTES", "shape": [-1]}] + [
            {"name": f["name"], "datatype": DATATYPE[f["dtype"]], "shape": [-1]} for f in request_features(manifest)
        ]
        assert body["inputs"] == expected
        assert [o["name"] for o in body["outputs"]] == ["label", "probability"]
        store = [f["name"] for f in manifest["features"] if f["source"] == "store"]
        assert body["parameters"]["store_features"] == store

    def test_alias_as_name_and_version_path(self, client):
        """An alias names its model; /versions/{v} works for the version it points at."""
        assert client.get("/v2/models/production").json()["versions"] == ["v2"]
        assert client.get("/v2/models/production/versions/v2").json()["name"] == "production"
        assert client.get("/v2/models/modelserve/versions/v2").status_code == 200

    @pytest.mark.parametrize(
        "path",
        [
            "/v2/models/nope",
            "/v2/models/nope/ready",
            "/v2/models/modelserve/versions/v9",
            "/v2/models/modelserve/versions/v1",  # on disk but not loaded
            "/v2/models/production/versions/v3",  # not what production points at
            "/v2/models/modelserve/versions/v9/ready",
        ],
    )
    def test_unknown_model_or_version_404(self, client, path):
        """Unknown names, and versions that are not loaded (or not the alias's), are 404 with an error."""
        assert_v2_error(client.get(path), 404)

    def test_model_ready(self, client):
        """Model ready echoes the name."""
        assert client.get("/v2/models/modelserve/ready").json() == {"name": "modelserve", "ready": True}
        assert client.get("/v2/models/production/versions/v2/ready").json()["ready"] is True


class TestInfer:
    def test_matches_predict(self, client, manifest):
        """The manifest sample through V2 gives /predict's label and probability, and echoes the id."""
        req = manifest["sample"]["request"]
        want = client.post("/predict", json=req).json()
        r = client.post("/v2/models/modelserve/infer", json={"id": "42", "inputs": v2_inputs(manifest, [req])})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["id"] == "42"
        assert body["model_name"] == "modelserve"
        assert body["model_version"] == "v2" == r.headers["x-model-version"]
        outputs = {o["name"]: o for o in body["outputs"]}
        assert outputs["label"] == {"name": "label", "datatype": "INT64", "shape": [1], "data": [want["prediction"]]}
        assert outputs["probability"]["datatype"] == "FP32"
        assert outputs["probability"]["data"] == [want["probability"]]

    def test_batch_matches_predict_batch(self, client, manifest, users):
        """A batch of N rows answers N labels and probabilities in order, equal to /predict/batch."""
        base = manifest["sample"]["request"]["features"]
        reqs = [{"user_id": u, "features": {**base}} for u in users]
        want = client.post("/predict/batch", json={"instances": reqs}).json()["predictions"]
        body = client.post("/v2/models/modelserve/infer", json={"inputs": v2_inputs(manifest, reqs)}).json()
        outputs = {o["name"]: o for o in body["outputs"]}
        assert outputs["label"]["shape"] == [len(reqs)]
        assert outputs["label"]["data"] == [w["prediction"] for w in want]
        assert outputs["probability"]["data"] == [w["probability"] for w in want]

    def test_nested_and_n_by_1(self, client, manifest, users):
        """Nested [[v], ...] data with shape [N, 1] and flat data with shape [N, 1] give the flat answer."""
        reqs = [{"user_id": u, "features": manifest["sample"]["request"]["features"]} for u in users]
        flat = client.post("/v2/models/modelserve/infer", json={"inputs": v2_inputs(manifest, reqs)}).json()
        nested = client.post(
            "/v2/models/modelserve/infer", json={"inputs": v2_inputs(manifest, reqs, nested=True)}
        ).json()
        n_by_1 = [{**i, "shape": [len(reqs), 1]} for i in v2_inputs(manifest, reqs)]
        flat_n1 = client.post("/v2/models/modelserve/infer", json={"inputs": n_by_1}).json()
        assert flat["outputs"] == nested["outputs"] == flat_n1["outputs"]

    def test_id_generated_and_parameters_accepted(self, client, manifest):
        """Without an id one is answered; request and input parameters are accepted and ignored."""
        inputs = v2_inputs(manifest, [manifest["sample"]["request"]])
        inputs[0]["parameters"] = {"content_type": "str"}
        r = client.post(
            "/v2/models/modelserve/infer",
            json={"parameters": {"priority": 1, "binary_data_output": True}, "inputs": inputs},
        )
        assert r.status_code == 200, r.text
        assert len(r.json()["id"]) >= 16

    def test_requested_outputs(self, client, manifest):
        """`outputs` selects and orders the outputs; an unknown one is 400."""
        inputs = v2_inputs(manifest, [manifest["sample"]["request"]])
        body = client.post(
            "/v2/models/modelserve/infer",
            json={"inputs": inputs, "outputs": [{"name": "probability", "parameters": {"binary_data": True}}]},
        ).json()
        assert [o["name"] for o in body["outputs"]] == ["probability"]
        r = client.post("/v2/models/modelserve/infer", json={"inputs": inputs, "outputs": [{"name": "logits"}]})
        assert_v2_error(r, 400, "logits")

    def test_pinned_version_and_alias(self, client, manifest):
        """versions/v2 and the production alias answer like the routed name; an unloaded version is 404."""
        body = {"inputs": v2_inputs(manifest, [manifest["sample"]["request"]])}
        routed = client.post("/v2/models/modelserve/infer", json=body).json()
        for path in ("/v2/models/modelserve/versions/v2/infer", "/v2/models/production/infer"):
            r = client.post(path, json=body)
            assert r.status_code == 200, r.text
            assert r.json()["outputs"] == routed["outputs"]
        assert_v2_error(client.post("/v2/models/modelserve/versions/v1/infer", json=body), 404, "v1")
        assert_v2_error(client.post("/v2/models/nope/infer", json=body), 404, "nope")

    def test_candidate_alias_is_a_model_name(self, client, manifest):
        """The shadowed candidate alias, named in the README, answers metadata and infer with its own version."""
        assert client.get("/v2/models/candidate").json()["versions"] == ["v3"]
        assert client.get("/v2/models/candidate/ready").status_code == 200
        body = {"inputs": v2_inputs(manifest, [manifest["sample"]["request"]])}
        r = client.post("/v2/models/candidate/infer", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["model_name"] == "candidate" and r.json()["model_version"] == "v3"

    def test_null_for_nullable_feature(self, client, manifest):
        """JSON null is a missing value for a nullable feature, and refused for the others."""
        nullable = first(manifest, "float", nullable=True)
        strict = first(manifest, "float", nullable=False)
        req = manifest["sample"]["request"]
        inputs = replace(v2_inputs(manifest, [req]), nullable, data=[None])
        assert client.post("/v2/models/modelserve/infer", json={"inputs": inputs}).status_code == 200
        inputs = replace(v2_inputs(manifest, [req]), strict, data=[None])
        body = assert_v2_error(client.post("/v2/models/modelserve/infer", json={"inputs": inputs}), 400, strict)
        assert body["detail"][0]["loc"] == ["body", "inputs", strict, "data", 0]

    def test_nan_is_missing_for_nullable_feature(self, client, manifest):
        """NaN for a nullable float, as a JSON literal or a binary FP32 value, answers what /predict does for null."""
        nullable = first(manifest, "float", nullable=True)
        req = manifest["sample"]["request"]
        want = client.post("/predict", json={**req, "features": {**req["features"], nullable: None}}).json()
        inputs = replace(v2_inputs(manifest, [req]), nullable, data=[0.0])
        raw = json.dumps({"inputs": inputs}).replace('"data": [0.0]', '"data": [NaN]')
        as_json = client.post("/v2/models/modelserve/infer", content=raw, headers={"content-type": "application/json"})
        binary = {k: v for k, v in next(i for i in inputs if i["name"] == nullable).items() if k != "data"}
        binary["parameters"] = {"binary_data_size": 4}
        head = json.dumps({"inputs": [binary if i["name"] == nullable else i for i in inputs]}).encode()
        as_binary = client.post(
            "/v2/models/modelserve/infer",
            content=head + struct.pack("<f", float("nan")),
            headers={"inference-header-content-length": str(len(head))},
        )
        for r in (as_json, as_binary):
            assert r.status_code == 200, r.text
            outputs = {o["name"]: o["data"][0] for o in r.json()["outputs"]}
            assert outputs == {"label": want["prediction"], "probability": want["probability"]}

    def test_nan_refused_for_non_nullable_and_inf_everywhere(self, client, manifest):
        """NaN for a non-nullable float and ±Inf for any float are 400s naming the input and row."""
        nullable = first(manifest, "float", nullable=True)
        strict = first(manifest, "float", nullable=False)
        req = manifest["sample"]["request"]
        for name, literal in ((strict, "NaN"), (nullable, "Infinity"), (nullable, "-Infinity"), (strict, "Infinity")):
            inputs = replace(v2_inputs(manifest, [req, req]), name, data=[0.0, 0.5])
            raw = json.dumps({"inputs": inputs}).replace('"data": [0.0, 0.5]', f'"data": [0.5, {literal}]')
            r = client.post("/v2/models/modelserve/infer", content=raw, headers={"content-type": "application/json"})
            body = assert_v2_error(r, 400, f"{name}[1]")
            assert [d["loc"] for d in body["detail"]] == [["body", "inputs", name, "data", 1]]

    def test_counts_predictions(self, client, manifest, users):
        """Rows predicted through V2 count in predictions_total like /predict."""
        before = metric_value(client.get("/metrics").text, "modelserve_predictions_total", {"model_version": "v2"})
        reqs = [{"user_id": u, "features": manifest["sample"]["request"]["features"]} for u in users]
        assert client.post("/v2/models/modelserve/infer", json={"inputs": v2_inputs(manifest, reqs)}).status_code == 200
        after = metric_value(client.get("/metrics").text, "modelserve_predictions_total", {"model_version": "v2"})
        assert after - before == len(reqs)


class TestInferRefusals:
    """Bad input is 400 (not 422) with {"error", "detail"}, naming every offending input."""

    def post(self, client, inputs: list[dict[str, Any]], **extra: Any):
        return client.post("/v2/models/modelserve/infer", json={"inputs": inputs, **extra})

    @pytest.fixture
    def inputs(self, manifest):
        return v2_inputs(manifest, [manifest["sample"]["request"]])

    def test_wrong_shape(self, client, manifest, inputs):
        """A shape other than [N] / [N, 1], or data that does not fill it, is refused."""
        name = first(manifest, "float")
        for change in ({"shape": [1, 2]}, {"shape": [2]}, {"shape": [0]}, {"shape": [1, 1, 1]}):
            body = assert_v2_error(self.post(client, replace(inputs, name, **change)), 400, name)
            assert body["detail"][0]["loc"][:3] == ["body", "inputs", name]
        value = next(i for i in inputs if i["name"] == name)["data"][0]
        assert_v2_error(self.post(client, replace(inputs, name, data=[[value]])), 400, name)  # nested for [1]
        assert_v2_error(self.post(client, replace(inputs, name, shape=[1, 1], data=[[value, value]])), 400, name)

    def test_batch_sizes_differ(self, client, manifest, inputs):
        """Inputs of different N are refused."""
        name = first(manifest, "float")
        value = next(i for i in inputs if i["name"] == name)["data"][0]
        assert_v2_error(self.post(client, replace(inputs, name, shape=[2], data=[value, value])), 400, "batch size")

    def test_wrong_datatype(self, client, manifest, inputs):
        """A datatype that is not the feature's is refused, naming the input and what it takes."""
        num, text = first(manifest, "float"), first(manifest, "string")
        r = self.post(client, replace(replace(inputs, num, datatype="INT64"), text, datatype="FP32"))
        body = assert_v2_error(r, 400, num, text)
        assert {tuple(d["loc"]) for d in body["detail"]} == {
            ("body", "inputs", num, "datatype"),
            ("body", "inputs", text, "datatype"),
        }
        assert_v2_error(self.post(client, replace(inputs, num, datatype="FLOAT")), 400, num)

    def test_fp64_accepted_for_float(self, client, manifest, inputs):
        """FP64 is accepted for a float feature, like FP32."""
        assert self.post(client, replace(inputs, first(manifest, "float"), datatype="FP64")).status_code == 200

    def test_values_checked_like_predict(self, client, manifest, inputs):
        """A string in a number tensor, a bool for a number and a number for a bool are refused by the decoder."""
        num, flag = first(manifest, "float"), first(manifest, "bool")
        for name, bad in ((num, "1.5"), (num, True), (flag, 1), (flag, "true")):
            body = assert_v2_error(self.post(client, replace(inputs, name, data=[bad])), 400, f"{name}[0]")
            assert body["detail"][0]["loc"] == ["body", "inputs", name, "data", 0]

    def test_bool_and_bytes(self, client, manifest, inputs):
        """BOOL takes JSON true/false and BYTES takes strings; both change nothing else."""
        flag, text = first(manifest, "bool"), first(manifest, "string")
        for value in (True, False):
            assert self.post(client, replace(inputs, flag, data=[value])).status_code == 200
        assert self.post(client, replace(inputs, text, data=["a-new-category"])).status_code == 200
        assert_v2_error(self.post(client, replace(inputs, text, data=[7])), 400, text)

    def test_missing_extra_and_duplicate_inputs(self, client, manifest, inputs):
        """Missing, unknown and repeated inputs are all named in one 400."""
        num = first(manifest, "float")
        changed = [i for i in inputs if i["name"] != num]
        changed += [{"name": "colour", "datatype": "BYTES", "shape": [1], "data": ["red"]}, changed[0]]
        body = assert_v2_error(self.post(client, changed), 400, num, "colour", "user_id")
        assert {d["type"] for d in body["detail"]} == {"missing_input", "extra_input", "duplicate_input"}

    def test_missing_user_id(self, client, inputs):
        """The model has store features, so the user_id input is required."""
        assert_v2_error(self.post(client, [i for i in inputs if i["name"] != "user_id"]), 400, "user_id")

    def test_unknown_user_404(self, client, inputs):
        """A user the compute source does not know is 404, naming the user_id row."""
        r = self.post(client, replace(inputs, "user_id", data=["u-nobody"]))
        body = assert_v2_error(r, 404)
        assert body["detail"][0]["loc"] == ["body", "inputs", "user_id", "data", 0]

    @pytest.mark.parametrize(
        "body",
        [
            b"{not json",
            b'{"inputs": [{"name": "amount", "shape": [1], "datatype": "FP32", "data": [NaN]}]}',
            b"[]",
            b'{"inputs": []}',
            b'{"inputs": [{"name": "amount", "shape": [1], "datatype": "FP32", "data": [1]}], "input": []}',
            b'{"id": 42, "inputs": [{"name": "amount", "shape": [1], "datatype": "FP32", "data": [1]}]}',
            b'{"inputs": [{"name": "amount", "shape": [-1], "datatype": "FP32", "data": [1]}]}',
        ],
    )
    def test_malformed_request_400(self, client, body):
        """Bad JSON, NaN, a non-object, no inputs, unknown keys, a non-string id, a negative shape: 400."""
        r = client.post("/v2/models/modelserve/infer", content=body, headers={"content-type": "application/json"})
        assert_v2_error(r, 400)

    def test_infinite_float_refused(self, client, manifest, inputs):
        """A float too large for a double parses as infinity and is refused, as /predict does."""
        name = first(manifest, "float")
        raw = json.dumps({"inputs": replace(inputs, name, data=[0])}).replace('"data": [0]', '"data": [1e999]')
        r = client.post("/v2/models/modelserve/infer", content=raw, headers={"content-type": "application/json"})
        assert_v2_error(r, 400, name)

    @pytest.mark.parametrize("literal", ["1e308", "-3.5e38"])
    def test_float_beyond_float32_refused(self, client, manifest, inputs, literal):
        """A float finite as a double but infinite as float32 is a 400 naming the input and row, as in /predict."""
        name = first(manifest, "float")
        raw = json.dumps({"inputs": replace(inputs, name, data=[0])}).replace('"data": [0]', f'"data": [{literal}]')
        r = client.post("/v2/models/modelserve/infer", content=raw, headers={"content-type": "application/json"})
        body = assert_v2_error(r, 400, name)
        assert [(d["loc"], d["type"]) for d in body["detail"]] == [
            (["body", "inputs", name, "data", 0], "float32_range")
        ]


class TestInferContentType:
    @pytest.fixture
    def body(self, manifest):
        return json.dumps({"inputs": v2_inputs(manifest, [manifest["sample"]["request"]])}).encode()

    @pytest.mark.parametrize("headers", [{}, {"content-type": "application/json; charset=utf-8"}])
    def test_json_or_undeclared_accepted(self, client, body, headers):
        """JSON, and a body without Content-Type (what Triton's clients send), are inferred."""
        r = client.post("/v2/models/modelserve/infer", content=body, headers=headers)
        assert r.status_code == 200, r.text

    @pytest.mark.parametrize("ctype", ["text/notjson", "application/octet-stream", "text/plain"])
    def test_other_types_415(self, client, body, ctype):
        """A declared non-JSON type is 415, octet-stream too when no binary header says the body is binary."""
        r = client.post("/v2/models/modelserve/infer", content=body, headers={"content-type": ctype})
        assert assert_v2_error(r, 415)["detail"][0]["loc"] == ["header", "content-type"]

    def test_octet_stream_with_binary_header(self, client, body):
        """A binary-extension body may be declared application/octet-stream."""
        headers = {"content-type": "application/octet-stream", "inference-header-content-length": str(len(body))}
        r = client.post("/v2/models/modelserve/infer", content=body, headers=headers)
        assert r.status_code == 200, r.text

"""A real Open Inference Protocol client (``tritonclient.http``) against a real ``modelserve serve``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from harness import ServerProcess
from tests.support.workspace import manifest

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException, triton_to_np_dtype  # noqa: E402  (after the skip)

pytestmark = pytest.mark.e2e
TOKEN = "tritonclient-admin-token-" + "x" * 16


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory) -> Iterator[ServerProcess]:
    with ServerProcess(trained.env(MODELSERVE_ADMIN_TOKEN=TOKEN), tmp_path_factory.mktemp("v2") / "server.log") as srv:
        srv.wait_ready()
        yield srv


@pytest.fixture(scope="module")
def client(server):
    c = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
    yield c
    c.close()


@pytest.fixture(scope="module")
def requests(trained) -> list[dict[str, Any]]:
    """/predict bodies for a few users: the manifest sample's features, varied per row."""
    import pandas as pd

    sample = manifest(trained, "production")["sample"]["request"]
    users = list(pd.read_parquet(trained.feature_table)["user_id"][:4])
    out = []
    for i, user in enumerate(users):
        features = dict(sample["features"])
        for name, value in features.items():
            if isinstance(value, float):
                features[name] = value * (1 + i) / 3
        out.append({"user_id": user, "features": features})
    return out


def infer_inputs(metadata: dict[str, Any], requests: list[dict[str, Any]], binary: bool) -> list[Any]:
    """Inputs built the way a client does: names, datatypes and shapes from the model metadata."""
    inputs = []
    for meta in metadata["inputs"]:
        name, datatype = meta["name"], meta["datatype"]
        values = [r["user_id"] if name == "user_id" else r["features"][name] for r in requests]
        if datatype == "BYTES":
            array = np.array([v.encode() for v in values], dtype=np.object_)
        else:
            array = np.array(values, dtype=triton_to_np_dtype(datatype))
        inp = httpclient.InferInput(name, [len(values)], datatype)
        inp.set_data_from_numpy(array, binary_data=binary)
        inputs.append(inp)
    return inputs


class TestTritonClient:
    def test_server_live_ready_and_model_ready(self, client):
        """The client's health calls see a live, ready server and a ready model under each name."""
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("modelserve")
        assert client.is_model_ready("production", "v2")
        assert not client.is_model_ready("nope")
        assert client.get_server_metadata()["name"] == "modelserve"

    def test_model_metadata(self, client):
        """Metadata lists user_id and the request features with V2 datatypes, and the two outputs."""
        meta = client.get_model_metadata("modelserve")
        assert meta["inputs"][0] == {"name": "user_id", "datatype": "BYTES", "shape": [-1]}
        assert {i["datatype"] for i in meta["inputs"]} <= {"BYTES", "FP32", "INT64", "BOOL"}
        assert [o["name"] for o in meta["outputs"]] == ["label", "probability"]

    @pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
    def test_infer_matches_predict(self, client, server, requests, binary):
        """Numpy tensors in (JSON or binary), the same labels and probabilities as /predict out."""
        meta = client.get_model_metadata("modelserve")
        # A nullable float left null by the sample cannot travel as a finite FP32; give it a value.
        reqs = [{**r, "features": {k: 0.5 if v is None else v for k, v in r["features"].items()}} for r in requests]
        result = client.infer("modelserve", infer_inputs(meta, reqs, binary), request_id="batch-1")
        assert result.get_response()["id"] == "batch-1"
        want = [httpx.post(server.url + "/predict", json=r).json() for r in reqs]
        labels, probs = result.as_numpy("label"), result.as_numpy("probability")
        assert labels.tolist() == [w["prediction"] for w in want]
        # FP32 inputs are what the model computes with, so the probabilities are identical.
        assert probs.tolist() == [w["probability"] for w in want]

    @pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
    def test_nan_is_null_for_nullable_float(self, client, server, requests, binary):
        """A nullable float sent as NaN in a numpy FP32 tensor (JSON or binary) answers what /predict does for null."""
        meta = client.get_model_metadata("modelserve")
        floats = {i["name"] for i in meta["inputs"] if i["datatype"] == "FP32"}
        nullable = [n for n in meta["parameters"]["nullable"] if n in floats]
        if not nullable:
            pytest.skip("the demo model has no nullable float feature")
        name = nullable[0]
        reqs = [{**r, "features": {k: 0.5 if v is None else v for k, v in r["features"].items()}} for r in requests]
        reqs = [{**r, "features": {**r["features"], name: float("nan") if i % 2 else 1.5}} for i, r in enumerate(reqs)]
        result = client.infer("modelserve", infer_inputs(meta, reqs, binary))
        nulls = [{**r, "features": {k: None if v != v else v for k, v in r["features"].items()}} for r in reqs]
        want = [httpx.post(server.url + "/predict", json=r).json() for r in nulls]
        assert result.as_numpy("label").tolist() == [w["prediction"] for w in want]
        assert result.as_numpy("probability").tolist() == [w["probability"] for w in want]

    def test_nan_refused_for_non_nullable_float(self, client, requests):
        """NaN for a float the manifest does not mark nullable is a 400 naming the input and row."""
        meta = client.get_model_metadata("modelserve")
        nullable = set(meta["parameters"]["nullable"])
        strict = [i["name"] for i in meta["inputs"] if i["datatype"] == "FP32" and i["name"] not in nullable]
        if not strict:
            pytest.skip("the demo model has no non-nullable float feature")
        reqs = [{**r, "features": {k: 0.5 if v is None else v for k, v in r["features"].items()}} for r in requests]
        reqs[1]["features"] = {**reqs[1]["features"], strict[0]: float("nan")}
        for binary in (False, True):
            with pytest.raises(InferenceServerException) as exc:
                client.infer("modelserve", infer_inputs(meta, reqs, binary))
            assert exc.value.status() == "400" and f"{strict[0]}[1]" in exc.value.message()

    def test_requested_output_and_version(self, client, requests):
        """A requested output subset and an explicit version work through the client."""
        meta = client.get_model_metadata("modelserve", "v2")
        reqs = [{**r, "features": {k: 0.5 if v is None else v for k, v in r["features"].items()}} for r in requests]
        result = client.infer(
            "modelserve",
            infer_inputs(meta, reqs[:1], binary=False),
            model_version="v2",
            outputs=[httpclient.InferRequestedOutput("probability", binary_data=False)],
        )
        assert result.as_numpy("label") is None
        assert result.as_numpy("probability").shape == (1,)

    def test_errors_reach_the_client(self, client, requests):
        """Unknown models and bad inputs raise InferenceServerException with the V2 status and message."""
        meta = client.get_model_metadata("modelserve")
        with pytest.raises(InferenceServerException) as exc:
            client.infer("nope", infer_inputs(meta, requests[:1], binary=False))
        assert exc.value.status() == "404" and "nope" in exc.value.message()
        with pytest.raises(InferenceServerException) as exc:
            client.get_model_metadata("modelserve", "v9")
        assert exc.value.status() == "404"
        bad = [{**meta, "inputs": [i for i in meta["inputs"] if i["name"] != "user_id"]}][0]
        with pytest.raises(InferenceServerException) as exc:
            client.infer("modelserve", infer_inputs(bad, requests[:1], binary=False))
        assert exc.value.status() == "400" and "user_id" in exc.value.message()

    def test_repository_index_and_load(self, client):
        """The client's repository calls: the index with the admin token, load/unload refused with 400."""
        index = client.get_model_repository_index(headers={"Authorization": f"Bearer {TOKEN}"})
        assert {"name": "production", "version": "v2", "state": "READY", "reason": ""} in index
        with pytest.raises(InferenceServerException) as exc:
            client.get_model_repository_index()
        assert exc.value.status() == "401"
        for call in (client.load_model, client.unload_model):
            with pytest.raises(InferenceServerException) as exc:
                call("production")
            assert exc.value.status() == "400" and "modelserve promote" in exc.value.message()

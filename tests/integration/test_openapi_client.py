"""A typed client generated from the served /openapi.json (openapi-python-client) works against the service.

The document is what teams generate clients from, so the test does what a new
user does: generate, import, call. Every endpoint must be generated, answers
parse into the generated model classes, and errors into the one ``Error`` model.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from app.main import create_app
from tests.support.workspace import manifest as read_manifest
from tests.support.workspace import serving

GENERATOR = Path(sys.executable).parent / "openapi-python-client"
PACKAGE = "modelserve_client"
WITH_BODY = {"predict", "predict_batch", "infer", "infer_version", "repository_index", "feedback", "feedback_batch"}


@pytest.fixture(scope="module")
def client(trained):
    with serving(create_app(trained.settings())) as c:
        yield c


@pytest.fixture(scope="module")
def document(client) -> dict[str, Any]:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    return dict(r.json())


@pytest.fixture(scope="module")
def generated(document, tmp_path_factory) -> Iterator[ModuleType]:
    """The generated package, imported from a fresh directory (and forgotten afterwards)."""
    if not GENERATOR.exists():
        pytest.skip("openapi-python-client is not installed (the dev extra)")
    root = tmp_path_factory.mktemp("openapi")
    (root / "openapi.json").write_text(json.dumps(document))
    env = {**os.environ, "PATH": f"{GENERATOR.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.run(
        [str(GENERATOR), "generate", "--path", "openapi.json", "--output-path", "client"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    # Anything the generator could not use is reported as a warning and left out of the client.
    assert "WARNING" not in output and "Unable to" not in output, output
    sys.path.insert(0, str(root / "client"))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(root / "client"))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def api(generated, client) -> Any:
    """The generated client, talking to the in-process app through its TestClient (an httpx client)."""
    return generated.Client(base_url=str(client.base_url)).set_httpx_client(client)


def submodule(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


class TestDocument:
    def test_every_operation_has_schemas_and_the_one_error_shape(self, document):
        """Each operation answers a named 200 schema (unless it never succeeds) and every error is Error."""
        for path, operations in document["paths"].items():
            for method, op in operations.items():
                where = f"{method.upper()} {path}"
                success = op["responses"].get("200") or op["responses"].get("202")
                if success is not None and path != "/metrics":
                    assert "$ref" in str(success["content"]["application/json"]["schema"]), where
                for status, response in op["responses"].items():
                    if status[0] in "45":
                        assert response["content"]["application/json"]["schema"] == {
                            "$ref": "#/components/schemas/Error"
                        }, (where, status)
                for param in op.get("parameters", []):
                    if param["in"] == "path":
                        assert param["required"] and param["schema"]["type"] == "string", (where, param)
                if op["operationId"] in WITH_BODY:
                    body = op["requestBody"]["content"]["application/json"]["schema"]
                    assert body["$ref"].startswith("#/components/schemas/"), where
                else:
                    assert "requestBody" not in op, where
        schemas = document["components"]["schemas"]
        assert {"Error", "ErrorDetail", "PredictRequest", "PredictResponse", "BatchRequest", "BatchResponse"} <= set(
            schemas
        )
        assert "HTTPValidationError" not in schemas

    def test_answer_schema_follows_the_model(self, document, trained):
        """PredictResponse is the served model's: its classes as the label's values."""
        classes = read_manifest(trained, "production")["outputs"]["classes"]
        prediction = document["components"]["schemas"]["PredictResponse"]["properties"]["prediction"]
        assert prediction["enum"] == classes


class TestGeneratedClient:
    def test_predict_parses_into_the_generated_models(self, api, client, trained):
        """/predict through the generated client: a PredictResponse equal to the raw answer."""
        models, predict = submodule("models"), submodule("api.predict.predict")
        sample = read_manifest(trained, "production")["sample"]["request"]
        result = predict.sync(client=api, body=models.PredictRequest.from_dict(sample))
        assert isinstance(result, models.PredictResponse)
        raw = client.post("/predict", json=sample).json()
        assert result.prediction.value == raw["prediction"]
        assert result.probability == raw["probability"]
        assert result.model_version == raw["model_version"] == "v2"

    def test_predict_batch_parses_into_the_generated_models(self, api, trained):
        """/predict/batch through the generated client: a BatchResponse of PredictResponse items, in order."""
        models, batch = submodule("models"), submodule("api.predict.predict_batch")
        sample = read_manifest(trained, "production")["sample"]["request"]
        body = models.BatchRequest.from_dict({"instances": [sample, {**sample, "request_id": "second"}]})
        result = batch.sync(client=api, body=body)
        assert isinstance(result, models.BatchResponse)
        assert [type(p) for p in result.predictions] == [models.PredictResponse] * 2
        assert result.predictions[1].request_id == "second"

    def test_errors_parse_into_the_error_model(self, api, trained):
        """An unknown user (404) and a bad value (422) both parse into Error with ErrorDetail entries."""
        models, predict = submodule("models"), submodule("api.predict.predict")
        sample = read_manifest(trained, "production")["sample"]["request"]
        response = predict.sync_detailed(client=api, body=models.PredictRequest.from_dict({**sample, "user_id": "u-x"}))
        assert response.status_code == 404
        assert isinstance(response.parsed, models.Error)
        assert "u-x" in response.parsed.error
        number = next(k for k, v in sample["features"].items() if isinstance(v, float))
        bad = models.PredictRequest.from_dict({**sample, "features": {**sample["features"], number: "high"}})
        response = predict.sync_detailed(client=api, body=bad)
        assert response.status_code == 422
        assert isinstance(response.parsed, models.Error)
        assert [type(d) for d in response.parsed.detail] == [models.ErrorDetail]
        assert response.parsed.detail[0].loc == ["body", "features", number]

    def test_v2_version_routes_are_generated(self, api):
        """The versioned V2 routes exist in the client and parse into their models."""
        models = submodule("models")
        meta = submodule("api.v2.model_version_metadata").sync("modelserve", "v2", client=api)
        assert isinstance(meta, models.ModelMetadata) and meta.versions
        ready = submodule("api.v2.model_version_ready").sync("production", "v2", client=api)
        assert isinstance(ready, models.ModelReady) and ready.ready
        missing = submodule("api.v2.model_version_metadata").sync("modelserve", "v9", client=api)
        assert isinstance(missing, models.Error)

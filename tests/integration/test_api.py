"""The HTTP API in-process: TestClient as a context manager, so the lifespan runs."""

from __future__ import annotations

import json
import logging

import pytest

from app.main import create_app
from app.predictor import Predictor
from tests.support.metrics import metric_value
from tests.support.workspace import manifest, serving


@pytest.fixture
def client(trained):
    with serving(create_app(trained.settings())) as c:
        yield c


@pytest.fixture
def sample(trained):
    return manifest(trained)["sample"]


class TestPredict:
    def test_sample_request(self, client, sample):
        """The manifest sample predicts its expected output, with the version header."""
        r = client.post("/predict", json={**sample["request"], "request_id": "req-1"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["request_id"] == "req-1"
        assert body["model_version"] == "v2"
        assert r.headers["x-model-version"] == "v2"
        assert body["prediction"] == sample["expected"]["prediction"]
        assert body["probability"] == pytest.approx(sample["expected"]["probability"], abs=1e-5)

    def test_request_id_generated(self, client, sample):
        """Without a request_id the service makes a unique one."""
        ids = {client.post("/predict", json=sample["request"]).json()["request_id"] for _ in range(3)}
        assert len(ids) == 3

    def test_bad_fields_named(self, client, sample):
        """A wrong type and an unknown feature are both named in one 422."""
        feats = {**sample["request"]["features"], "amount": "lots", "colour": "red"}
        r = client.post("/predict", json={"user_id": sample["request"]["user_id"], "features": feats})
        assert r.status_code == 422
        body = r.json()
        assert set(body) == {"error", "detail"}
        assert {tuple(d["loc"]) for d in body["detail"]} == {
            ("body", "features", "amount"),
            ("body", "features", "colour"),
        }
        assert "amount" in body["error"] and "colour" in body["error"]

    def test_unknown_user_404(self, client, sample):
        """A user the compute source does not know is a 404 naming user_id."""
        r = client.post("/predict", json={**sample["request"], "user_id": "u-nobody"})
        assert r.status_code == 404
        assert r.json()["detail"][0]["loc"] == ["body", "user_id"]

    def test_oversize_413(self, client, sample):
        """A body over the limit is 413 before any parsing."""
        big = b'{"user_id": "' + b"x" * 70_000 + b'"}'
        r = client.post("/predict", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert r.json()["error"].startswith("request body larger")

    def test_wrong_content_type_415(self, client, sample):
        """A form body is refused with 415, naming the header."""
        r = client.post("/predict", content=b"a=1", headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 415
        assert r.json()["detail"][0]["loc"] == ["header", "content-type"]

    @pytest.mark.parametrize("raw", [b"{", b"", b"[1,2]", b'{"features": NaN}', b"\x00\x01"])
    def test_garbage_is_422(self, client, raw):
        """Truncated, empty and non-object bodies are 422, never 500."""
        r = client.post("/predict", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422

    def test_batch_matches_single(self, client, trained):
        """/predict/batch answers in order and agrees with /predict for each instance."""
        import pandas as pd

        from app.training.data import generate_requests

        users = pd.read_parquet(trained.feature_table)
        bodies = generate_requests(20, seed=3, users_df=users)
        r = client.post("/predict/batch", json={"instances": bodies})
        assert r.status_code == 200, r.text
        batch = r.json()["predictions"]
        assert len(batch) == 20
        for b, single in zip(bodies, batch, strict=True):
            one = client.post("/predict", json=b).json()
            assert one["prediction"] == single["prediction"]
            assert one["probability"] == pytest.approx(single["probability"], abs=1e-6)

    def test_batch_unknown_user_names_index(self, client, sample):
        """An unknown user in a batch is a 404 naming the instance."""
        inst = sample["request"]
        r = client.post("/predict/batch", json={"instances": [inst, {**inst, "user_id": "u-ghost"}]})
        assert r.status_code == 404
        assert r.json()["detail"][0]["loc"] == ["body", "instances", 1, "user_id"]

    def test_unknown_route_shape(self, client):
        """Unknown routes answer in the one error shape."""
        r = client.get("/nope")
        assert r.status_code == 404
        assert set(r.json()) == {"error", "detail"}


class TestProbesAndMetrics:
    def test_ready_lists_models(self, client):
        """Readiness is 200 with the loaded aliases once warm."""
        r = client.get("/health/ready")
        assert r.status_code == 200
        assert r.json() == {"status": "ready", "models": {"production": "v2"}}
        assert client.get("/health/live").status_code == 200

    def test_metrics_count_predictions(self, client, sample):
        """predictions_total, the latency histogram and HTTP counts move with traffic."""
        for _ in range(3):
            client.post("/predict", json=sample["request"])
        client.post("/predict", json={"features": {}})
        text = client.get("/metrics").text
        assert metric_value(text, "modelserve_predictions_total", {"model_version": "v2"}) == 3
        assert metric_value(text, "modelserve_prediction_latency_seconds_count", {"model_version": "v2"}) == 3
        assert metric_value(text, "modelserve_model_info", {"alias": "production", "version": "v2"}) == 1
        assert metric_value(text, "modelserve_ready") == 1
        assert metric_value(text, "modelserve_http_requests_total", {"route": "/predict", "status": "2xx"}) == 3
        assert metric_value(text, "modelserve_http_requests_total", {"route": "/predict", "status": "4xx"}) == 1
        assert metric_value(text, "modelserve_http_request_duration_seconds_count", {"route": "/predict"}) == 4

    def test_openapi_has_model_schema(self, client):
        """The OpenAPI document carries the served model's request schema."""
        doc = client.get("/openapi.json").json()
        schemas = doc["components"]["schemas"]
        assert set(schemas["Features"]["properties"]) == {"amount", "device", "score", "first_purchase"}
        assert schemas["Features"]["additionalProperties"] is False


class BrokenPredictor(Predictor):
    """Fails as no prediction should: an error the service does not know, its message full of internals."""

    async def predict(self, body: bytes):
        raise RuntimeError("cannot reach /var/secret/model.onnx")

    async def predict_batch(self, body: bytes):
        raise RuntimeError("cannot reach /var/secret/model.onnx")


class TestUnexpectedError:
    @pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
    def test_answered_500_counted_and_raised(self, trained, sample, path, caplog):
        """An unexpected error in a prediction is a 500 in the one error shape with no internals, counted
        as 5xx, logged with its traceback, and raised on to the server (the framework's own handling)."""
        body = sample["request"] if path == "/predict" else {"instances": [sample["request"]]}
        app = create_app(trained.settings())
        with serving(app, raise_server_exceptions=False) as client:
            c = app.state.container
            c.predictor = BrokenPredictor(c.predictor.chooser, c.features, c.metrics)
            with caplog.at_level(logging.ERROR, logger="modelserve.api"):
                r = client.post(path, json=body)
            text = client.get("/metrics").text
            assert r.status_code == 500
            assert r.json() == {"error": "internal error", "detail": []}
            assert "secret" not in r.text
            assert any(rec.exc_info and "secret" in str(rec.exc_info[1]) for rec in caplog.records)
            assert metric_value(text, "modelserve_http_requests_total", {"route": path, "status": "5xx"}) == 1
        app = create_app(trained.settings())
        with serving(app) as client:
            c = app.state.container
            c.predictor = BrokenPredictor(c.predictor.chooser, c.features, c.metrics)
            with pytest.raises(RuntimeError, match="secret"):
                client.post(path, json=body)


class TestStartup:
    def test_not_ready_when_selfcheck_fails(self, workspace):
        """A manifest whose expected output does not match keeps the service from starting."""
        path = workspace.models_dir / "v2" / "manifest.json"
        m = json.loads(path.read_text())
        m["sample"]["expected"]["probability"] = 1.5
        path.write_text(json.dumps(m))
        # The manifest is not covered by its own checksums, so this reaches the self-check.
        app = create_app(workspace.settings())
        with serving(app) as client:
            r = client.get("/health/ready")
            assert r.status_code == 503
            assert "self-check failed" in r.json()["error"]
            assert client.post("/predict", json=m["sample"]["request"]).status_code == 503
            assert client.get("/health/live").status_code == 200

    def test_tampered_primary_refused(self, workspace):
        """A primary model whose checksum fails is never served."""
        (workspace.models_dir / "v2" / "model.onnx").write_bytes(b"junk")
        with serving(create_app(workspace.settings())) as client:
            r = client.get("/health/ready")
            assert r.status_code == 503
            assert "checksum mismatch" in r.json()["error"]

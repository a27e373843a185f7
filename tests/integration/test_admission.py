"""Admission control in the real app: deadlines and refusals on every prediction route, probes untouched."""

from __future__ import annotations

import time

import pytest

from app.main import create_app
from tests.integration.test_v2 import v2_inputs
from tests.support.metrics import metric_value
from tests.support.workspace import manifest, serving


@pytest.fixture
def client(trained):
    with serving(create_app(trained.settings())) as c:
        yield c


def past() -> dict[str, str]:
    return {"X-Request-Deadline-Ms": str(int(time.time() * 1000) - 5000)}


def far() -> dict[str, str]:
    return {"X-Request-Deadline-Ms": str(int(time.time() * 1000) + 600_000)}


def routes(trained, rows: int = 2) -> list[tuple[str, dict]]:
    """One request per prediction route: /predict (one row), /predict/batch and V2 (``rows`` rows each)."""
    m = manifest(trained)
    request = m["sample"]["request"]
    return [
        ("/predict", request),
        ("/predict/batch", {"instances": [request] * rows}),
        ("/v2/models/modelserve/infer", {"inputs": v2_inputs(m, [request] * rows)}),
    ]


def predictions(client) -> float:
    return metric_value(client.get("/metrics").text, "modelserve_predictions_total")


def test_past_deadline_refused_on_every_prediction_route(client, trained):
    """A deadline in the past is a 503 with Retry-After on /predict, batch and V2, and runs no prediction."""
    before = predictions(client)
    for path, body in routes(trained):
        r = client.post(path, json=body, headers=past())
        assert r.status_code == 503, (path, r.text)
        assert r.headers["retry-after"] == "1"
        assert set(r.json()) == {"error", "detail"} and "deadline" in r.json()["error"]
    text = client.get("/metrics").text
    assert metric_value(text, "modelserve_predictions_total") == before
    assert metric_value(text, "modelserve_requests_shed_total", {"reason": "deadline"}) == 3
    refused = {"route": "/v2/models/{name}/infer", "status": "5xx"}
    assert metric_value(text, "modelserve_http_requests_total", refused) == 1


def test_far_deadline_served_on_every_prediction_route(client, trained):
    """A deadline far in the future is served on /predict, batch and V2."""
    before = predictions(client)
    for path, body in routes(trained):
        r = client.post(path, json=body, headers={**far(), "x-envoy-expected-rq-timeout-ms": "600000"})
        assert r.status_code == 200, (path, r.text)
    assert predictions(client) == before + 5  # one, two (the batch) and two (V2)


def test_refused_requests_never_run_and_probes_answer(trained):
    """With a queue time no request can meet, refusals run no prediction, and probes, metrics and metadata answer."""
    with serving(create_app(trained.settings(max_queue_ms=1e-9))) as client:
        ran = refused = 0
        for path, body in routes(trained) * 4:
            r = client.post(path, json=body)
            assert r.status_code in (200, 503), (path, r.text)
            if r.status_code == 503:
                assert r.headers["retry-after"] == "1"
                refused += 1
            else:  # the progress floor lets some late requests through rather than serve none at all
                ran += 1 if path == "/predict" else 2
        assert refused > 0
        assert client.get("/health/live").status_code == 200
        assert client.get("/health/ready").status_code == 200
        assert client.get("/v2/models/modelserve").status_code == 200
        text = client.get("/metrics").text
        assert metric_value(text, "modelserve_predictions_total") == ran
        assert metric_value(text, "modelserve_requests_shed_total", {"reason": "queue_time"}) == refused

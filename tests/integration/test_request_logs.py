"""In process: the prediction log's sampling and trace ids, and the ids on the service's request-scoped lines."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider

from app.main import create_app
from app.telemetry import logs
from app.telemetry.log_lines import sampled_in
from tests.support.metrics import metric_value
from tests.support.workspace import Workspace, sample

N = 600
RETRIED = 100
RATE = 0.3


class Collect(logging.Handler):
    """Keeps every record's JSON line, formatted where it is logged (inside the request's context)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logs.JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(orjson.loads(self.format(record)))


def traced(app: Any, tracer: Any) -> Any:
    """The app with every HTTP request inside a span, as a tracing middleware would run it."""

    async def wrapper(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        with tracer.start_as_current_span(scope["path"]):
            await app(scope, receive, send)

    return wrapper


@pytest.fixture
def served(trained: Workspace, tmp_path: Path) -> Iterator[tuple[TestClient, Any, Collect]]:
    app = create_app(trained.settings(log_dir=tmp_path / "log", log_sample_rate=RATE, log_flush_seconds=0.05))
    handler = Collect()
    request_log = logging.getLogger("test.request")
    request_log.addHandler(handler)
    request_log.setLevel(logging.INFO)
    tracer = TracerProvider().get_tracer("test")
    try:
        with TestClient(traced(app, tracer)) as client:
            deadline = time.monotonic() + 60
            while not app.state.startup.done():
                assert time.monotonic() < deadline, "start-up did not finish"
                time.sleep(0.01)
            predictor = app.state.container.predictor
            predictor.listeners.append(lambda rec, model: request_log.info("served %s", rec.request_id))
            yield client, app, handler
    finally:
        request_log.removeHandler(handler)


def test_sampling_trace_ids_and_request_scoped_lines(
    served: tuple[TestClient, Any, Collect], trained: Workspace, tmp_path: Path
) -> None:
    """Through the app, the log keeps exactly the sampled request ids (retries agree) with their trace ids, and
    lines logged while serving a request carry its request id, model version, trace and span ids."""
    client, app, handler = served
    body = sample(trained)["request"]
    ids = [f"e2e-{i}" for i in range(N)]
    for rid in [*ids, *ids[:RETRIED]]:
        r = client.post("/predict", json={**body, "request_id": rid})
        assert r.status_code == 200, r.text
    app.state.container.prediction_log.close_sync()  # the sampling decision is the writer's: let it drain first
    metrics_text = client.get("/metrics").text
    files = sorted((tmp_path / "log").glob("predictions-*.jsonl"))
    written = [orjson.loads(line) for p in files for line in p.read_bytes().splitlines()]
    predictions = [line for line in written if line["kind"] == "prediction"]

    expected = [rid for rid in [*ids, *ids[:RETRIED]] if sampled_in(rid, RATE)]
    assert [line["request_id"] for line in predictions] == expected  # a retried id: both kept or both left out
    kept = sum(sampled_in(rid, RATE) for rid in ids)
    assert abs(kept / N - RATE) <= 0.06
    assert {line["sample_rate"] for line in predictions} == {RATE}
    assert metric_value(metrics_text, "modelserve_prediction_log_sampled_out_total") == N + RETRIED - len(expected)

    traces = [line["trace_id"] for line in predictions]
    assert all(isinstance(t, str) and len(t) == 32 for t in traces) and len(set(traces)) == len(traces)

    assert len(handler.lines) == N + RETRIED
    by_trace = {line["trace_id"]: line for line in predictions}
    for line in handler.lines:
        rid = line["message"].removeprefix("served ")
        assert line["request_id"] == rid and line["model_version"] == "v2"
        assert len(line["trace_id"]) == 32 and len(line["span_id"]) == 16
        if line["trace_id"] in by_trace:
            assert by_trace[line["trace_id"]]["request_id"] == rid

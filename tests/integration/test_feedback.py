"""POST /feedback and /feedback/batch in-process against the demo (binary) model, with a real label log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.jobs.logdata import connect
from app.main import create_app
from tests.support.metrics import metric_value
from tests.support.workspace import Workspace, serving


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "log"


@pytest.fixture
def client(trained: Workspace, log_dir: Path):
    with serving(create_app(trained.settings(log_dir=log_dir, max_batch_size=5))) as c:
        yield c


def label_lines(log_dir: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(log_dir.glob("labels-*.jsonl")) for line in f.read_text().splitlines()]


def test_label_accepted_and_logged(client, log_dir: Path) -> None:
    """A known class is answered 202 and written as a label line (source api) once the server stops."""
    r = client.post("/feedback", json={"request_id": "req-1", "label": 1, "observed_at": "2026-01-02T03:04:05+01:00"})
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 1}
    r = client.post(
        "/feedback/batch", json={"labels": [{"request_id": "req-2", "label": 0}, {"request_id": "req-1", "label": 0}]}
    )
    assert r.status_code == 202, r.text
    text = client.get("/metrics").text
    assert metric_value(text, "modelserve_feedback_total", {"outcome": "accepted"}) == 3
    client.__exit__(None, None, None)  # the lifespan's shutdown flushes the label log
    lines = label_lines(log_dir)
    assert [(x["request_id"], x["label"], x["source"]) for x in lines] == [
        ("req-1", 1, "api"),
        ("req-2", 0, "api"),
        ("req-1", 0, "api"),
    ]
    assert lines[0]["observed_at"] == "2026-01-02T02:04:05Z" and lines[0]["kind"] == "label"
    rows = connect(log_dir).execute("SELECT request_id, CAST(label AS BIGINT) FROM labels ORDER BY 1").fetchall()
    assert rows == [("req-1", 0), ("req-2", 0)]  # the relabelled request keeps its latest label


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"request_id": "r", "label": 2}, ["body", "label"]),
        ({"request_id": "r", "label": "1"}, ["body", "label"]),
        ({"request_id": "r", "label": 1.5}, ["body", "label"]),
        ({"label": 1}, ["body", "request_id"]),
        ({"request_id": "r" * 129, "label": 1}, ["body", "request_id"]),
        ({"request_id": "r", "label": 1, "observed_at": "soon"}, ["body", "observed_at"]),
    ],
)
def test_bad_label_refused(client, body: dict, loc: list) -> None:
    """Unknown classes, wrong JSON types, bad ids and times are a 422 naming the field."""
    r = client.post("/feedback", json=body)
    assert r.status_code == 422, r.text
    assert set(r.json()) == {"error", "detail"}
    assert [d["loc"] for d in r.json()["detail"]] == [loc]
    assert metric_value(client.get("/metrics").text, "modelserve_feedback_total", {"outcome": "invalid"}) == 1


def test_non_finite_refused(client) -> None:
    """A non-finite number (not JSON at all) is a 422, not a 500."""
    r = client.post(
        "/feedback", content=b'{"request_id": "r", "label": NaN}', headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body"]


def test_batch_names_each_bad_label_and_writes_none(client, log_dir: Path) -> None:
    """A batch with a bad label is refused whole, the label's index named; nothing of it is written."""
    labels = [{"request_id": f"r{i}", "label": i % 2} for i in range(4)]
    labels[3] = {"request_id": "r3", "label": "yes"}
    r = client.post("/feedback/batch", json={"labels": labels})
    assert r.status_code == 422
    assert [d["loc"] for d in r.json()["detail"]] == [["body", "labels", 3, "label"]]
    client.__exit__(None, None, None)
    assert label_lines(log_dir) == []


def test_batch_over_limit_refused(client) -> None:
    """More labels than MODELSERVE_MAX_BATCH_SIZE is a 422 naming labels."""
    r = client.post("/feedback/batch", json={"labels": [{"request_id": f"r{i}", "label": 1} for i in range(6)]})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "labels"]
    assert "MODELSERVE_MAX_BATCH_SIZE" in r.json()["error"]


def test_not_json_content_type_refused(client) -> None:
    """A body not declared as JSON is a 415, like every JSON route."""
    r = client.post("/feedback", content=b'{"request_id": "r", "label": 1}', headers={"content-type": "text/plain"})
    assert r.status_code == 415


def test_no_log_dir_404(trained: Workspace) -> None:
    """Without a prediction log there is nowhere to put labels: 404 naming MODELSERVE_LOG_DIR."""
    with serving(create_app(trained.settings())) as c:
        for path, body in (("/feedback", {"request_id": "r", "label": 1}), ("/feedback/batch", {"labels": []})):
            r = c.post(path, json=body)
            assert r.status_code == 404
            assert "MODELSERVE_LOG_DIR" in r.json()["error"]


class TestRegressionLabels:
    @pytest.fixture
    def regression(self, task_models, tmp_path: Path):
        models = task_models.workspace(tmp_path, "r1")
        with serving(create_app(task_models.settings(models, log_dir=tmp_path / "log"))) as c:
            yield c

    @pytest.mark.parametrize("label", [1e308, -1e300, 3.5e38])
    def test_label_beyond_float32_refused(self, regression, label: float) -> None:
        """A regression label the float32 model could never answer is refused as /predict refuses such a
        feature: one such label made every metric of its window non-finite in ``evaluate``."""
        r = regression.post("/feedback", json={"request_id": "r1", "label": label})
        assert r.status_code == 422, r.text
        assert r.json()["detail"] == [
            {
                "loc": ["body", "label"],
                "msg": "Input should be a number within float32's range (magnitude at most 3.4028235e+38)",
                "type": "float32_range",
            }
        ]
        r = regression.post(
            "/feedback/batch",
            json={"labels": [{"request_id": "r2", "label": 3.0}, {"request_id": "r1", "label": label}]},
        )
        assert r.status_code == 422 and [d["loc"] for d in r.json()["detail"]] == [["body", "labels", 1, "label"]]

    def test_large_finite_label_accepted(self, regression) -> None:
        r = regression.post("/feedback", json={"request_id": "r1", "label": 3.4e38})
        assert r.status_code == 202, r.text

"""A valid request the model cannot answer with finite numbers is a 422 naming the features, never ``null``.

Every float within float32's range is a valid input, yet a scaled 3e38 is
infinite in float32, and the model's answer then is ±inf or NaN: JSON has
neither, so the answer said ``"prediction": null`` (or null probabilities),
which the answer schema does not allow. Served models ``m1`` (multiclass) and
``r1`` (regression) of ``tests.support.task_models`` are asked on every path.
"""

from __future__ import annotations

from typing import Any

import pytest

from app.main import create_app
from tests.integration.test_tasks import v2_inputs
from tests.support.workspace import serving

NON_FINITE = {"loc": ["body", "features"], "type": "non_finite_answer"}


def extreme(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "features": {**body["features"], "score": 3.0e38}}


@pytest.fixture(params=["m1", "r1"], ids=["multiclass", "regression"])
def client(request, task_models, tmp_path):
    models = task_models.workspace(tmp_path, request.param)
    with serving(create_app(task_models.settings(models))) as c:
        yield c


def only(detail: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(detail) == 1, detail
    return {"loc": detail[0]["loc"], "type": detail[0]["type"]}


def test_predict_and_batch(client, task_models):
    good, bad = task_models.bodies(2)
    r = client.post("/predict", json=extreme(bad))
    assert r.status_code == 422, r.text
    assert only(r.json()["detail"]) == NON_FINITE
    r = client.post("/predict/batch", json={"instances": [good, extreme(bad)]})
    assert r.status_code == 422, r.text
    assert only(r.json()["detail"]) == {"loc": ["body", "instances", 1, "features"], "type": "non_finite_answer"}
    assert client.post("/predict/batch", json={"instances": [good, bad]}).status_code == 200


@pytest.mark.parametrize("n", [1, 3])
def test_v2_infer(client, task_models, n):
    inputs = v2_inputs(task_models, n)
    next(i for i in inputs if i["name"] == "score")["data"][n - 1] = 3.0e38
    r = client.post("/v2/models/modelserve/infer", json={"inputs": inputs})
    assert r.status_code == 400, r.text
    assert only(r.json()["detail"]) == {"loc": ["body", "inputs", "data", n - 1], "type": "non_finite_answer"}

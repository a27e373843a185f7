"""An int request feature holds a 64-bit integer: anything larger is a 4xx naming it, never a 500.

JSON has no integer bound, and Python reads ``10**400`` as an exact int that
no float can hold: it once passed validation and failed in the runtime's
float32 feed. Served model ``m1`` (``tests.support.task_models``) has the int
feature ``age``; every route that decodes it is tried.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.main import create_app
from tests.integration.test_tasks import v2_inputs
from tests.support.workspace import serving

HUGE = ["1" + "0" * 400, str(2**63), str(-(2**63) - 1)]


def with_age(body: dict[str, Any], literal: str) -> bytes:
    """``body`` as JSON text with the ``age`` feature's value replaced verbatim by ``literal``."""
    text = json.dumps({**body, "features": {**body["features"], "age": "__AGE__"}})
    return text.replace('"__AGE__"', literal).encode()


@pytest.fixture
def client(task_models, tmp_path):
    models = task_models.workspace(tmp_path, "m1")
    with serving(create_app(task_models.settings(models))) as c:
        yield c


@pytest.mark.parametrize("literal", HUGE, ids=["10**400", "2**63", "-2**63-1"])
def test_predict_refuses_int_beyond_64_bits(client, task_models, literal):
    body = task_models.bodies(1)[0]
    r = client.post("/predict", content=with_age(body, literal), headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert [d["loc"] for d in r.json()["detail"]] == [["body", "features", "age"]]
    batch = json.dumps({"instances": [body, "__ROW__"]}).replace('"__ROW__"', with_age(body, literal).decode())
    r = client.post("/predict/batch", content=batch, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert [d["loc"] for d in r.json()["detail"]] == [["body", "instances", 1, "features", "age"]]
    assert client.post("/predict", json=body).status_code == 200


@pytest.mark.parametrize("value", [10**400, 2**63], ids=["10**400", "2**63"])
def test_v2_refuses_int64_tensor_value_beyond_64_bits(client, task_models, value):
    inputs = v2_inputs(task_models, 2)
    age = next(i for i in inputs if i["name"] == "age")
    age["data"][1] = value
    r = client.post("/v2/models/modelserve/infer", json={"inputs": inputs})
    assert r.status_code == 400, r.text
    assert [d["loc"] for d in r.json()["detail"]] == [["body", "inputs", "age", "data", 1]]


def test_int64_bounds_are_accepted(client, task_models):
    body = task_models.bodies(1)[0]
    for literal in (str(2**63 - 1), str(-(2**63))):
        r = client.post("/predict", content=with_age(body, literal), headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text


BOUNDS = {
    "INT8": (-(2**7), 2**7 - 1),
    "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1),
    "UINT8": (0, 2**8 - 1),
    "UINT16": (0, 2**16 - 1),
    "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1),
}


def infer_age(client, task_models, datatype: str, values: list[Any]):
    inputs = v2_inputs(task_models, len(values))
    age = next(i for i in inputs if i["name"] == "age")
    age.update(datatype=datatype, data=values)
    return client.post("/v2/models/modelserve/infer", json={"inputs": inputs})


@pytest.mark.parametrize("datatype", sorted(BOUNDS))
def test_v2_refuses_value_outside_its_declared_datatype(client, task_models, datatype):
    """INT32 took 2**40 and UINT8 took -1: a value its tensor's datatype cannot hold is a 400 at its row."""
    lo, hi = BOUNDS[datatype]
    r = infer_age(client, task_models, datatype, [30, min(hi, 2**63 - 1)])
    assert r.status_code == 200, r.text
    assert infer_age(client, task_models, datatype, [lo, 30]).status_code == 200
    for bad in (hi + 1, lo - 1, 2**40 if hi < 2**40 else -5):
        r = infer_age(client, task_models, datatype, [30, bad])
        assert r.status_code == 400, (datatype, bad, r.text)
        detail = r.json()["detail"]
        assert [d["loc"] for d in detail] == [["body", "inputs", "age", "data", 1]], detail
        assert datatype in detail[0]["msg"]
    r = infer_age(client, task_models, datatype, [lo - 1])  # the one-row request too
    assert r.status_code == 400, r.text


def test_v2_range_check_names_the_number_among_values_the_decoder_refuses(client, task_models):
    r = infer_age(client, task_models, "INT8", ["x", 300])
    assert r.status_code == 400, r.text
    assert ["body", "inputs", "age", "data", 1] in [d["loc"] for d in r.json()["detail"]]

"""Error answers stay small whatever the body: no amplification of hostile input.

Before the bound, a 59 KB /predict body of unknown keys drew a 694 KB 422, an
8 MB batch body a 93 MB one, and a 60 KB model name came back twice in a
120 KB 404. Every answer here must list at most MODELSERVE_MAX_ERROR_DETAILS
problems (a final entry counting the rest), echo at most ECHO_CHARS of any
client text, and stay under 64 KiB; the decoder must stop building entries
after COLLECT_LIMIT.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from app.errors import COLLECT_LIMIT, ECHO_CHARS, ValidationFailed
from app.main import create_app
from app.model.decoder import Decoder
from app.model.repository import Repository
from tests.support.workspace import Workspace, serving

ANSWER_LIMIT = 64 * 1024
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def sample(trained: Workspace) -> dict[str, Any]:
    return json.loads((trained.models_dir / "v2" / "manifest.json").read_text())["sample"]["request"]


@pytest.fixture(scope="module")
def client(trained: Workspace) -> Iterator[TestClient]:
    with serving(create_app(trained.settings())) as c:
        yield c


def with_unknown(instance: dict[str, Any], n: int, width: int = 1) -> dict[str, Any]:
    """``instance`` with ``n`` unknown feature names added (each at least ``width`` characters)."""
    extra = {f"k{i:0{width}d}": 0 for i in range(n)}
    return {**instance, "features": {**instance["features"], **extra}}


def assert_bounded(r: Any, status: int, listed: int = 50) -> dict[str, Any]:
    """The answer is ``status``, under 64 KiB, lists ``listed`` problems plus one entry counting the rest."""
    assert r.status_code == status, r.text[:300]
    assert len(r.content) <= ANSWER_LIMIT, len(r.content)
    body = r.json()
    assert len(body["detail"]) == listed + 1
    assert body["detail"][-1]["type"] == "more_errors"
    return body


def rest(body: dict[str, Any]) -> int:
    return int(body["detail"][-1]["msg"].split()[0])


class TestAmplification:
    def test_many_unknown_keys_in_predict(self, client, sample):
        """A ~59 KB body of 6,000 unknown feature names gets 50 of them and a count of the other 5,950."""
        raw = orjson.dumps(with_unknown(sample, 6000, width=4))
        assert 50_000 < len(raw) <= 64 * 1024
        body = assert_bounded(client.post("/predict", content=raw, headers=JSON), 422)
        assert body["detail"][0] == {
            "loc": ["body", "features", "k0000"],
            "msg": "Extra inputs are not permitted",
            "type": "extra_forbidden",
        }
        assert rest(body) == 5950
        assert "6000 error(s)" in body["error"]

    def test_batch_near_the_size_limit(self, client, sample):
        """An ~8 MB batch of 1,000 instances full of unknown names is answered in under 64 KiB, all counted."""
        raw = orjson.dumps({"instances": [with_unknown(sample, 650, width=6)] * 1000})
        assert 7_000_000 < len(raw) <= 8 * 1024 * 1024
        body = assert_bounded(client.post("/predict/batch", content=raw, headers=JSON), 422)
        assert body["detail"][0]["loc"] == ["body", "instances", 0, "features", "k000000"]
        assert rest(body) == 650_000 - 50

    def test_many_wrong_values_in_batch(self, client, sample):
        """1,000 instances each with every feature wrong: at most 50 listed, the rest counted."""
        bad = {**sample, "features": {k: [] for k in sample["features"]}}
        raw = orjson.dumps({"instances": [bad] * 1000})
        body = assert_bounded(client.post("/predict/batch", content=raw, headers=JSON), 422)
        total = int(body["error"].split(": ")[1].split()[0])
        assert total >= 1000 * len(sample["features"]) and rest(body) == total - 50

    def test_long_model_name_not_echoed(self, client):
        """A 60 KB model name is answered 404 with at most ECHO_CHARS of it, in a small answer."""
        name = "m" * 60_000
        r = client.get(f"/v2/models/{name}")
        assert r.status_code == 404
        assert len(r.content) < 2048
        assert "m" * (ECHO_CHARS + 1) not in r.text
        r = client.post(f"/v2/models/modelserve/versions/{name}/infer", content=b"{}", headers=JSON)
        assert r.status_code == 404 and "m" * (ECHO_CHARS + 1) not in r.text

    def test_long_unknown_names_clipped(self, client, sample):
        """Unknown names of 10,000 characters are echoed only as their first ECHO_CHARS."""
        long_names = {**sample, "features": {**sample["features"], "x" * 10_000: 1, "y" * 10_000: 2}}
        r = client.post("/predict", content=orjson.dumps(long_names), headers=JSON)
        assert r.status_code == 422
        assert "x" * (ECHO_CHARS + 1) not in r.text and "y" * (ECHO_CHARS + 1) not in r.text
        assert [len(d["loc"][-1]) for d in r.json()["detail"]] == [ECHO_CHARS + 1] * 2  # the prefix and "…"
        assert len(r.content) < 2048

    def test_many_unknown_v2_inputs(self, client):
        """20,000 unknown V2 inputs are answered in under 64 KiB, 50 listed and the rest counted."""
        inputs = [{"name": f"in{i}", "shape": [1], "datatype": "FP32", "data": [1.0]} for i in range(20_000)]
        r = client.post("/v2/models/modelserve/infer", content=orjson.dumps({"inputs": inputs}), headers=JSON)
        body = assert_bounded(r, 400)
        assert rest(body) > 20_000 - 50


class TestSetting:
    def test_max_error_details(self, trained, sample):
        """MODELSERVE_MAX_ERROR_DETAILS sets how many problems an answer lists."""
        with serving(create_app(trained.settings(max_error_details=3))) as c:
            r = c.post("/predict", content=orjson.dumps(with_unknown(sample, 10)), headers=JSON)
            body = assert_bounded(r, 422, listed=3)
            assert rest(body) == 7


class TestCollection:
    def test_decoder_stops_collecting(self, trained, sample):
        """The decoder builds at most COLLECT_LIMIT entries for 600,000 unknown names, yet counts them all."""
        decoder = Decoder(Repository(trained.models_dir).read_manifest("v2"))
        raw = orjson.dumps({"instances": [with_unknown(sample, 600)] * 1000})
        with pytest.raises(ValidationFailed) as caught:
            decoder.decode_batch(raw)
        assert caught.value.total == 600_000
        assert len(caught.value.detail) <= COLLECT_LIMIT + 1

    def test_few_problems_are_pydantics_own(self, trained, sample):
        """Below the limit the errors are exactly pydantic's: every unknown name and every bad value, in order."""
        decoder = Decoder(Repository(trained.models_dir).read_manifest("v2"))
        bad = with_unknown({**sample, "features": {**sample["features"], "amount": "x"}}, 3)
        with pytest.raises(ValidationFailed) as caught:
            decoder.decode(orjson.dumps(bad))
        locs = [d["loc"] for d in caught.value.detail]
        assert ["body", "features", "amount"] in locs
        assert [loc for loc in locs if loc[-1] != "amount"] == [["body", "features", f"k{i}"] for i in range(3)]

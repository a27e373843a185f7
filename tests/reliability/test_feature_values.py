"""Store-feature values from Redis and the upstream API are checked like any input.

A wrong-shaped value planted in a real redis-server is a counted miss
(``outcome="invalid"``), is deleted, and the request is answered from the
next tier; a wrong-shaped upstream answer is a 503 ``FeaturesUnavailable``.
Neither is ever a 500.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from pytest_httpserver import HTTPServer
from werkzeug import Response

from app.features.redis_tier import key_prefix
from app.features.table import OfflineTable
from app.main import create_app
from tests.support.metrics import metric_value
from tests.support.redis_server import RedisServer
from tests.support.workspace import Workspace, serving

USER = "u-00113"
GOOD = {"age": 41, "income": 52000.5, "days_since_signup": 300, "country": "DE"}

# What a broken writer, an old schema or a hand-typed SET can leave behind.
BAD_VALUES: dict[str, bytes] = {
    "empty object": b"{}",
    "array": b"[1,2,3]",
    "string": b'"str"',
    "number": b"42",
    "null": b"null",
    "wrong type (string for int)": orjson.dumps({**GOOD, "age": "forty"}),
    "wrong type (bool for float)": orjson.dumps({**GOOD, "income": True}),
    "wrong type (float for int)": orjson.dumps({**GOOD, "age": 41.5}),
    "null where not nullable": orjson.dumps({**GOOD, "country": None}),
    "missing feature": orjson.dumps({k: v for k, v in GOOD.items() if k != "country"}),
    "non-finite number": b'{"age": 41, "income": 1e999, "days_since_signup": 300, "country": "DE"}',
    "NaN literal": b'{"age": 41, "income": NaN, "days_since_signup": 300, "country": "DE"}',
    "overlong string": orjson.dumps({**GOOD, "country": "x" * 10_000}),
    "garbage bytes": b"\xff\xfe\x00garbage",
    "truncated JSON": orjson.dumps(GOOD)[:-5],
    "int beyond 64 bits": b'{"age": 9223372036854775808, "income": 52000.5, "days_since_signup": 300, "country": "DE"}',
    "float beyond float32": orjson.dumps({**GOOD, "income": 1e300}),
}


def store_names(ws: Workspace) -> list[str]:
    manifest = json.loads((ws.models_dir / "production" / "manifest.json").read_text())
    return [f["name"] for f in manifest["features"] if f["source"] == "store"]


def request(ws: Workspace) -> dict[str, Any]:
    body = json.loads((ws.models_dir / "production" / "manifest.json").read_text())["sample"]["request"]
    return {**body, "user_id": USER}


@pytest.mark.redis
class TestBadValueInRedis:
    @pytest.fixture(scope="class")
    @classmethod
    def redis_server(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
        with RedisServer(tmp_path_factory.mktemp("redis")) as server:
            yield server

    @pytest.fixture(scope="class")
    @classmethod
    def client(cls, trained: Workspace, redis_server: RedisServer) -> Iterator[TestClient]:
        settings = trained.settings(
            redis_url=redis_server.url,
            redis_connect_timeout_ms=25.0,
            redis_timeout_ms=25.0,
            memory_max_age_seconds=0,  # every request asks Redis
            shadow_enabled=False,
        )
        with serving(create_app(settings)) as c:
            yield c

    def plant(self, ws: Workspace, redis_server: RedisServer, value: bytes) -> str:
        key = key_prefix(store_names(ws)) + USER
        redis_server.client().set(key, value, ex=300)
        return key

    def wait_valid(self, redis_server: RedisServer, key: str) -> Any:
        """The key's value once the bad one is gone (deleted, then rewritten by the write-back)."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            raw = redis_server.client().get(key)
            if raw is not None:
                try:
                    value = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    value = None
                if isinstance(value, dict) and value.get("country") != "x" * 10_000 and len(value) >= 4:
                    return value
            time.sleep(0.02)
        raise AssertionError(f"bad value still in Redis: {redis_server.client().get(key)!r}")

    @pytest.mark.parametrize("case", list(BAD_VALUES))
    def test_predict_falls_through_to_compute(self, trained, redis_server, client, case) -> None:
        """/predict answers 200 from the compute tier; the bad value is counted invalid and replaced."""
        key = self.plant(trained, redis_server, BAD_VALUES[case])
        before = metric_value(client.get("/metrics").text, "modelserve_feature_lookups_total", {"outcome": "invalid"})
        r = client.post("/predict", json=request(trained))
        assert r.status_code == 200, r.text
        text = client.get("/metrics").text
        assert metric_value(text, "modelserve_feature_lookups_total", {"tier": "redis", "outcome": "invalid"}) == (
            before + 1
        )
        table = OfflineTable.load(trained.feature_table).rows[USER]
        assert self.wait_valid(redis_server, key) == table

    async def test_bad_value_is_deleted_but_a_newer_good_one_kept(self, trained, redis_server) -> None:
        """The tier deletes the bad value it read (no compute needed), never a good value stored since."""
        from app.features.build import redis_tier
        from app.telemetry.metrics import Metrics

        settings = trained.settings(redis_url=redis_server.url, redis_connect_timeout_ms=25.0, redis_timeout_ms=25.0)
        tier = redis_tier(settings, Metrics(), store_names(trained))
        assert tier is not None
        key = self.plant(trained, redis_server, b"[1,2,3]")
        assert await tier.get(USER) is None
        await asyncio.wait_for(asyncio.gather(*tier._pending), 5)
        assert redis_server.client().get(key) is None

        self.plant(trained, redis_server, b"{}")
        found = await tier.get_many([USER])  # reads the bad value ...
        redis_server.client().set(key, orjson.dumps(GOOD))  # ... a writer replaces it before the delete lands
        await asyncio.wait_for(asyncio.gather(*tier._pending), 5)
        assert found == {}
        assert orjson.loads(redis_server.client().get(key)) == GOOD
        await tier.close()

    def test_key_of_another_redis_type_is_invalid_not_a_redis_failure(self, trained, redis_server, client) -> None:
        """A hash (or list) at a user's key makes GET fail with WRONGTYPE: that is the value's fault, not
        Redis's, so it is counted invalid and deleted, and the breaker stays closed for every other user."""
        key = key_prefix(store_names(trained)) + USER
        redis_server.client().delete(key)
        redis_server.client().hset(key, mapping={"age": "41"})

        def count(outcome: str) -> float:
            text = client.get("/metrics").text
            return metric_value(text, "modelserve_feature_lookups_total", {"tier": "redis", "outcome": outcome})

        before = {o: count(o) for o in ("invalid", "error", "skipped")}
        for _ in range(8):  # more than the breaker's threshold of failures
            assert client.post("/predict", json=request(trained)).status_code == 200
        assert count("error") == before["error"]
        assert count("skipped") == before["skipped"]
        assert count("invalid") >= before["invalid"] + 1
        assert self.wait_valid(redis_server, key) == OfflineTable.load(trained.feature_table).rows[USER]

    @pytest.mark.parametrize("case", ["empty object", "array", "wrong type (string for int)", "garbage bytes"])
    def test_batch_falls_through_to_compute(self, trained, redis_server, client, case) -> None:
        """/predict/batch with the bad user among good ones answers 200 for every instance."""
        self.plant(trained, redis_server, BAD_VALUES[case])
        good = request(trained)
        r = client.post("/predict/batch", json={"instances": [good, {**good, "user_id": "u-00001"}, good]})
        assert r.status_code == 200, r.text
        assert len(r.json()["predictions"]) == 3


class TestBadUpstreamAnswer:
    @pytest.fixture
    def client(self, trained: Workspace, httpserver: HTTPServer) -> Iterator[tuple[TestClient, HTTPServer]]:
        settings = trained.settings(
            upstream_url=httpserver.url_for("/"),
            upstream_max_retries=0,
            feature_budget_ms=2000.0,
            upstream_timeout_ms=1000.0,
            shadow_enabled=False,
        )
        with serving(create_app(settings)) as c:
            yield c, httpserver

    @pytest.mark.parametrize(
        "features",
        [
            {},
            [1, 2, 3],
            "str",
            None,
            {**GOOD, "age": "forty"},
            {**GOOD, "income": True},
            {"age": 41},
            {**GOOD, "age": 2**63},
            {**GOOD, "income": 1e300},
        ],
        ids=["empty", "array", "string", "null", "wrong-type-int", "bool-for-float", "missing", "int-2**63", "1e300"],
    )
    def test_bad_features_are_503_never_500(self, trained, client, features) -> None:
        """An upstream 200 with wrong-shaped features is FeaturesUnavailable (503 + Retry-After), counted invalid."""
        c, upstream = client
        body = json.dumps({"user_id": USER, "features": features})
        upstream.expect_request(f"/users/{USER}/features").respond_with_response(
            Response(body, status=200, content_type="application/json")
        )
        for path, payload in (
            ("/predict", request(trained)),
            ("/predict/batch", {"instances": [request(trained)]}),
        ):
            r = c.post(path, json=payload)
            assert r.status_code == 503, (path, r.text)
            assert "Retry-After" in r.headers
            assert "features unavailable" in r.json()["error"]
        text = c.get("/metrics").text
        assert metric_value(text, "modelserve_feature_lookups_total", {"tier": "upstream", "outcome": "invalid"}) >= 1

    def test_garbage_body_is_503(self, trained, client) -> None:
        """An upstream 200 whose body is not JSON is a 503, never a 500."""
        c, upstream = client
        upstream.expect_request(f"/users/{USER}/features").respond_with_data(b"\xff\xfegarbage", status=200)
        r = c.post("/predict", json=request(trained))
        assert r.status_code == 503, r.text

    def test_good_answer_still_predicts(self, trained, client) -> None:
        """A well-formed upstream answer (with extra features the model does not use) predicts as before."""
        c, upstream = client
        body = json.dumps({"user_id": USER, "features": {**GOOD, "unused_extra": [1, 2]}})
        upstream.expect_request(f"/users/{USER}/features").respond_with_response(
            Response(body, status=200, content_type="application/json")
        )
        r = c.post("/predict", json=request(trained))
        assert r.status_code == 200, r.text

    @pytest.mark.parametrize(
        "value", ["inf", "1e400", "99999999999", "Fri, 31 Dec 9999 23:59:59 GMT", "-5", "nan", "soon"]
    )
    def test_odd_retry_after_is_a_bounded_503(self, trained, client, value) -> None:
        """A 429's Retry-After of inf was a 500 (OverflowError rendering ours); a huge one or a far date shut
        the upstream out until restart. Ours stays a whole number of seconds, at most MAX_RETRY_AFTER."""
        from app.retry import MAX_RETRY_AFTER

        c, upstream = client
        upstream.expect_request(f"/users/{USER}/features").respond_with_response(
            Response("slow down", status=429, headers={"Retry-After": value})
        )
        r = c.post("/predict", json=request(trained))
        assert r.status_code == 503, r.text
        assert 1 <= int(r.headers["Retry-After"]) <= MAX_RETRY_AFTER

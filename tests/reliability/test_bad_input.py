"""Hostile and malformed requests against the real app: never a 500, never a crash.

Truncated JSON, wrong content types, deep nesting, huge numbers, NaN and
Infinity literals, odd unicode, oversize bodies with and without
Content-Length. Each answer must be one of the documented statuses in the one
error shape, and the service must keep answering valid requests (and keep
logging them) afterwards.
"""

from __future__ import annotations

import gzip
import json
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.support.workspace import Workspace, serving
from tests.support.workspace import sample as manifest_sample


@pytest.fixture(scope="module")
def sample(trained: Workspace) -> dict[str, Any]:
    return manifest_sample(trained)


@pytest.fixture
def logged(trained: Workspace, tmp_path: Path) -> Iterator[tuple[TestClient, Path]]:
    log_dir = tmp_path / "log"
    settings = trained.settings(log_dir=log_dir)
    with serving(create_app(settings)) as client:
        yield client, log_dir


@pytest.fixture
def client(logged: tuple[TestClient, Path]) -> TestClient:
    return logged[0]


def raw_body(sample: dict[str, Any], value: str, field: str = "amount") -> bytes:
    """The sample request with one feature's JSON text replaced verbatim by ``value``."""
    body = json.loads(json.dumps(sample["request"]))
    body["features"][field] = "__X__"
    return json.dumps(body).encode().replace(b'"__X__"', value.encode())


def post(client: TestClient, content: Any, path: str = "/predict", **headers: str) -> Any:
    return client.post(path, content=content, headers={"content-type": "application/json", **headers})


def assert_error(r: Any, *statuses: int) -> dict[str, Any]:
    assert r.status_code in statuses, (r.status_code, r.text[:300])
    body = r.json()
    assert isinstance(body["error"], str) and "\n" not in body["error"]
    assert isinstance(body["detail"], list)
    return body


def still_serves(client: TestClient, sample: dict[str, Any]) -> None:
    r = client.post("/predict", json=sample["request"])
    assert r.status_code == 200, r.text


class TestMalformedJson:
    @pytest.mark.parametrize("cut", [1, 10, 30, -1])
    def test_truncated_json_is_422(self, client, sample, cut):
        """A body cut anywhere is a 422 naming the body."""
        raw = json.dumps(sample["request"]).encode()[:cut]
        body = assert_error(post(client, raw), 422)
        assert body["detail"][0]["loc"][0] == "body"

    @pytest.mark.parametrize("raw", [b"", b"null", b"[]", b'"text"', b"{}", b"\xff\xfe\x00", b"{" * 3])
    def test_not_an_object_is_422(self, client, raw):
        """Empty, non-object and invalid-UTF-8 bodies are 422s."""
        assert_error(post(client, raw), 422)

    @pytest.mark.parametrize(
        "ctype",
        ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml"],
    )
    def test_wrong_content_type_is_415(self, client, sample, ctype):
        """A body that is not declared as JSON is refused before it is parsed."""
        r = client.post("/predict", content=json.dumps(sample["request"]), headers={"content-type": ctype})
        body = assert_error(r, 415)
        assert body["detail"][0]["loc"] == ["header", "content-type"]

    @pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
    @pytest.mark.parametrize("ctype", ["text/notjson", None, "json", "application/jsonx", "application/+json"])
    def test_undeclared_or_not_json_is_415(self, client, sample, path, ctype):
        """A made-up type, no Content-Type at all, or one that only looks like JSON is 415, naming the header."""
        body = sample["request"] if path == "/predict" else {"instances": [sample["request"]]}
        headers = {"content-type": ctype} if ctype is not None else {}
        r = client.post(path, content=json.dumps(body), headers=headers)
        assert assert_error(r, 415)["detail"][0]["loc"] == ["header", "content-type"]

    @pytest.mark.parametrize(
        "ctype", ["application/json; charset=utf-8", "Application/JSON", "application/vnd.api+json", "text/x+json"]
    )
    def test_json_media_types_accepted(self, client, sample, ctype):
        """application/json with parameters, in any case, and +json media types are JSON."""
        r = client.post("/predict", content=json.dumps(sample["request"]), headers={"content-type": ctype})
        assert r.status_code == 200, r.text

    @pytest.mark.parametrize("path", ["/predict", "/predict/batch", "/v2/models/modelserve/infer", "/feedback"])
    @pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
    def test_compressed_body_is_415_naming_content_encoding(self, client, sample, path, encoding):
        """A compressed body (tritonclient's ``request_compression_algorithm``) is 415 naming
        Content-Encoding, not a 422 blaming the JSON the client sent."""
        body = {"instances": [sample["request"]]} if path == "/predict/batch" else sample["request"]
        raw = gzip.compress(json.dumps(body).encode()) if encoding == "gzip" else zlib.compress(b"{}")
        r = post(client, raw, path, **{"content-encoding": encoding})
        detail = assert_error(r, 415)["detail"]
        assert detail == [
            {
                "loc": ["header", "content-encoding"],
                "msg": "expected identity (uncompressed)",
                "type": "content_encoding",
            }
        ]

    @pytest.mark.parametrize("encoding", ["identity", "Identity", ""])
    def test_identity_encoding_predicts(self, client, sample, encoding):
        r = post(client, json.dumps(sample["request"]), **{"content-encoding": encoding})
        assert r.status_code == 200, r.text


class TestDeepNesting:
    @pytest.mark.parametrize("depth", [100, 10_000])
    def test_nested_arrays_in_a_feature(self, client, sample, depth):
        """10,000 nested arrays in a feature value: a 422, no recursion error, and the service goes on."""
        assert_error(post(client, raw_body(sample, "[" * depth + "]" * depth)), 422)
        still_serves(client, sample)

    @pytest.mark.parametrize("depth", [10_000, 30_000])
    def test_nested_objects_as_the_body(self, client, sample, depth):
        """A body that is nothing but nesting is a 422 (or 413 past the size limit), never a 500."""
        assert_error(post(client, b'{"a":' * depth + b"1" + b"}" * depth), 422, 413)
        still_serves(client, sample)

    def test_nested_arrays_past_the_size_limit_are_413(self, client, sample):
        """Nesting larger than the body limit never reaches the parser."""
        assert_error(post(client, b"[" * 200_000 + b"]" * 200_000), 413)

    def test_deep_batch(self, client, sample):
        """Deep nesting inside a batch instance is a 422 too."""
        inner = "[" * 10_000 + "]" * 10_000
        raw = b'{"instances": [' + raw_body(sample, inner) + b"]}"
        assert_error(post(client, raw, "/predict/batch"), 422)


class TestNumbers:
    @pytest.mark.parametrize("literal", ["1e400", "-1e400", "10" + "0" * 400, "NaN", "Infinity", "-Infinity"])
    def test_unrepresentable_float_is_422(self, client, sample, literal):
        """Overflowing numbers (1e400, 10**400 as an int literal) and NaN/Infinity literals name the feature."""
        body = assert_error(post(client, raw_body(sample, literal)), 422)
        assert ["body", "features", "amount"] in [d["loc"][:3] for d in body["detail"]]

    def test_absurdly_long_number_is_422(self, client, sample):
        """A 5,000-digit number is refused by the parser itself (invalid JSON at the body), not a 500."""
        body = assert_error(post(client, raw_body(sample, "-" + "9" * 5000)), 422)
        assert body["detail"][0]["loc"][0] == "body"
        still_serves(client, sample)

    @pytest.mark.parametrize("literal", ["1e-400", "-0.0", "0e0", "123456789012345678901234567890"])
    def test_representable_extremes_predict(self, client, sample, literal):
        """Underflow to zero, negative zero and a big integer are valid finite numbers."""
        r = post(client, raw_body(sample, literal))
        assert r.status_code == 200, r.text
        assert 0.0 <= r.json()["probability"] <= 1.0

    def test_huge_int_for_bool_and_string(self, client, sample):
        """A 400-digit integer where a bool or a string belongs is a plain type error."""
        big = "1" + "0" * 400
        assert_error(post(client, raw_body(sample, big, "first_purchase")), 422)
        assert_error(post(client, raw_body(sample, big, "device")), 422)

    @pytest.mark.parametrize("literal", ["1e308", "-1e308", "3.5e38", "-3.5e38", "3.4028236e38"])
    def test_beyond_float32_is_422(self, client, sample, literal):
        """A float finite as a double but infinite as float32 (the model's type) is a 422 naming the feature."""
        body = assert_error(post(client, raw_body(sample, literal)), 422)
        assert [d["loc"] for d in body["detail"]] == [["body", "features", "amount"]]
        assert body["detail"][0]["type"] == "float32_range"
        batch = b'{"instances": [' + json.dumps(sample["request"]).encode() + b", " + raw_body(sample, literal) + b"]}"
        body = assert_error(post(client, batch, "/predict/batch"), 422)
        assert [d["loc"] for d in body["detail"]] == [["body", "instances", 1, "features", "amount"]]

    @pytest.mark.parametrize("literal", ["3.4028234663852886e38", "-3.4028235e38", "1e38"])
    def test_float32_extremes_predict(self, client, sample, literal):
        """The largest float32 magnitudes, as numpy prints them or exactly, are still valid."""
        r = post(client, raw_body(sample, literal))
        assert r.status_code == 200, r.text


class TestUnicode:
    @pytest.mark.parametrize(
        "text",
        [
            r"\ud800",  # lone high surrogate, escaped
            r"\udfff\ud800",  # reversed pair
            "\u202eios\u202c",  # right-to-left override
            "\u200f\u200e",  # RTL/LTR marks
            r"ios\u0000",  # NUL
            "\U0001f600" * 10,  # astral plane
            "e\u0301",  # combining accent
        ],
    )
    def test_odd_strings_in_a_category(self, logged, sample, text):
        """Odd unicode in a string feature is a prediction (unknown category) or a 422, and is logged safely."""
        client, log_dir = logged
        rid = f"uni-{abs(hash(text))}"
        body = json.loads(json.dumps(sample["request"]))
        body["request_id"] = rid
        body["features"]["device"] = "__X__"
        raw = json.dumps(body).encode().replace(b'"__X__"', b'"' + text.encode("utf-8", "surrogatepass") + b'"')
        r = post(client, raw)
        assert r.status_code in (200, 422), r.text
        if r.status_code == 422:
            assert_error(r, 422)
        still_serves(client, sample)
        if r.status_code == 200:
            assert rid in logged_request_ids(client, log_dir, rid)

    @pytest.mark.parametrize("user", [r"u-00001\u0000", "\u202eu-00001", r"\ud800", "../../etc/passwd", "u" * 128])
    def test_odd_user_ids_are_unknown_users(self, client, sample, user):
        """A user id not in the store is a 404 whatever its characters; one JSON cannot carry is a 422 at the body."""
        raw = json.dumps(sample["request"]).encode()
        raw = raw.replace(json.dumps(sample["request"]["user_id"]).encode(), b'"' + user.encode() + b'"')
        body = assert_error(post(client, raw), 404, 422)
        if body["detail"]:
            assert all("user_id" in d["loc"] or d["type"] == "json_invalid" for d in body["detail"]), body


def logged_request_ids(client: TestClient, log_dir: Path, wanted: str, timeout: float = 5.0) -> set[str]:
    """Request ids in the prediction log, waiting until ``wanted`` shows up (the writer batches)."""
    deadline = time.monotonic() + timeout
    ids: set[str] = set()
    while time.monotonic() < deadline:
        ids = set()
        for path in log_dir.glob("predictions-*.jsonl"):
            for line in path.read_bytes().splitlines():
                if line.strip():
                    ids.add(orjson.loads(line).get("request_id"))
        if wanted in ids:
            break
        time.sleep(0.1)
    return ids


class TestOversize:
    def test_declared_oversize_is_413_unread(self, client, sample):
        """A Content-Length over the limit is refused with 413."""
        raw = raw_body(sample, "1" + " " * 70_000)
        assert_error(post(client, raw), 413)

    def test_chunked_oversize_is_413(self, client, sample):
        """Without Content-Length (chunked), reading stops at the limit with 413."""

        def chunks() -> Iterator[bytes]:
            yield b'{"user_id": "u-00001", "features": {"device": "'
            for _ in range(100):
                yield b"x" * 1024
            yield b'"}}'

        assert_error(post(client, chunks()), 413)
        still_serves(client, sample)

    def test_chunked_small_body_predicts(self, client, sample):
        """A chunked body within the limit is read whole and predicted."""
        raw = json.dumps(sample["request"]).encode()
        r = post(client, iter([raw[:10], raw[10:]]))
        assert r.status_code == 200, r.text

    def test_batch_over_the_instance_limit_is_422(self, trained, sample):
        """More instances than MODELSERVE_MAX_BATCH_SIZE is a 422 on ``instances``."""
        with serving(create_app(trained.settings(max_batch_size=5))) as c:
            body = assert_error(c.post("/predict/batch", json={"instances": [sample["request"]] * 6}), 422)
            assert body["detail"][0]["loc"][:2] == ["body", "instances"]
            assert_error(c.post("/predict/batch", json={"instances": []}), 422)

    def test_garbage_content_length_is_413(self, client, sample):
        """A Content-Length that is not a number is treated as too large, not trusted."""
        r = post(client, json.dumps(sample["request"]), **{"content-length": "lots"})
        assert r.status_code in (400, 413), r.text

"""The strict decoder generated from a manifest."""

from __future__ import annotations

import json

import orjson
import pytest

from app.errors import COLLECT_LIMIT, ValidationFailed
from app.model.decoder import Decoder
from app.model.manifest import Manifest


def make_manifest(store: bool = True) -> Manifest:
    features = [
        {"name": "amount", "dtype": "float", "source": "request"},
        {"name": "device", "dtype": "string", "source": "request", "categories": ["ios", "web"]},
        {"name": "score", "dtype": "float", "source": "request", "nullable": True},
        {"name": "first_purchase", "dtype": "bool", "source": "request"},
        {"name": "visits", "dtype": "int", "source": "request"},
    ]
    if store:
        features.insert(0, {"name": "age", "dtype": "int", "source": "store"})
    return Manifest.model_validate(
        {
            "version": "v9",
            "created_at": "2026-01-01T00:00:00Z",
            "task": "binary_classification",
            "features": features,
            "outputs": {},
            "sample": {"request": {}, "row": {}, "expected": {}},
            "files": {},
        }
    )


GOOD = {"amount": 12.5, "device": "ios", "score": None, "first_purchase": True, "visits": 3}


def body(features: dict | None = None, **top) -> bytes:
    return orjson.dumps({"user_id": "u-00001", "features": GOOD if features is None else features, **top})


def errors_of(decoder: Decoder, raw: bytes) -> list[dict]:
    with pytest.raises(ValidationFailed) as info:
        decoder.decode(raw)
    assert info.value.status_code == 422
    return info.value.detail


def locs(detail: list[dict]) -> set[tuple]:
    return {tuple(d["loc"]) for d in detail}


class TestAccepts:
    def test_valid_body(self):
        """A conforming body decodes to the user id and the request features by name."""
        d = Decoder(make_manifest()).decode(body(request_id="r-1"))
        assert d.user_id == "u-00001"
        assert d.features == GOOD
        assert d.request_id == "r-1"

    def test_int_for_float(self):
        """An integer literal is a valid float (JSON has one number type)."""
        d = Decoder(make_manifest()).decode(body({**GOOD, "amount": 3}))
        assert d.features["amount"] == 3.0

    def test_unknown_category_is_accepted(self):
        """A category the model never saw is not a client error: the encoder ignores it."""
        d = Decoder(make_manifest()).decode(body({**GOOD, "device": "smart-fridge"}))
        assert d.features["device"] == "smart-fridge"

    def test_user_optional_without_store_features(self):
        """A model without store features needs no user_id."""
        d = Decoder(make_manifest(store=False)).decode(orjson.dumps({"features": GOOD}))
        assert d.user_id is None


class TestRefuses:
    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("amount", "12.5"),  # string for a number
            ("amount", True),  # bool for a number
            ("amount", None),  # null where not nullable
            ("visits", 2.5),  # float for an int
            ("visits", True),
            ("device", 7),
            ("first_purchase", 1),  # int for a bool
            ("first_purchase", "true"),
            ("score", "0.3"),
            ("device", "x" * 300),  # over the string bound
        ],
    )
    def test_wrong_type_names_the_field(self, field, value):
        """Every wrong type is a 422 whose detail points at the field."""
        detail = errors_of(Decoder(make_manifest()), body({**GOOD, field: value}))
        assert locs(detail) == {("body", "features", field)}

    @pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
    def test_non_finite_floats(self, literal):
        """NaN, Infinity and overflowing literals are refused for floats."""
        raw = body({**GOOD, "amount": 0}).replace(b'"amount":0', b'"amount":' + literal)
        assert b"amount" in raw and literal in raw
        detail = errors_of(Decoder(make_manifest()), raw)
        assert ("body", "features", "amount") in locs(detail)

    def test_every_offending_field_is_named(self):
        """Unknown, missing and wrong fields are all reported at once."""
        bad = {"amount": "x", "device": "ios", "first_purchase": True, "visits": 1, "colour": "red"}
        detail = errors_of(Decoder(make_manifest()), body(bad))
        assert locs(detail) == {
            ("body", "features", "amount"),
            ("body", "features", "score"),  # nullable but still required
            ("body", "features", "colour"),
        }

    def test_missing_user_id_when_store_features(self):
        """user_id is required when the model reads store features."""
        detail = errors_of(Decoder(make_manifest()), orjson.dumps({"features": GOOD}))
        assert locs(detail) == {("body", "user_id")}

    def test_unknown_top_level_key(self):
        """Top-level keys other than user_id, features and request_id are refused."""
        detail = errors_of(Decoder(make_manifest()), body(extra=1))
        assert locs(detail) == {("body", "extra")}

    @pytest.mark.parametrize("raw", [b"", b"{", b'{"user_id": "u"', b"[]", b"null", b'"x"', b"\xff\xfe"])
    def test_not_an_object(self, raw):
        """Truncated, empty, non-object and non-UTF-8 bodies are 422 at the body."""
        detail = errors_of(Decoder(make_manifest()), raw)
        assert all(d["loc"][0] == "body" for d in detail)

    @pytest.mark.parametrize("amount", [3.5e38, -1e39, 10**40])
    def test_float_beyond_float32_among_many_unknown_names(self, amount):
        """Past COLLECT_LIMIT unknown names, a float out of float32's range is still counted among the problems."""
        features = {**GOOD, "amount": amount, **{f"k{i}": 1 for i in range(COLLECT_LIMIT + 5)}}
        with pytest.raises(ValidationFailed) as info:
            Decoder(make_manifest()).decode_batch(
                json.dumps({"instances": [{"user_id": "u-1", "features": features}]}).encode()  # 10**40 too
            )
        assert info.value.total == COLLECT_LIMIT + 6  # the unknown names and the float
        assert len(info.value.detail) == COLLECT_LIMIT

    def test_batch_bounds_and_positions(self):
        """Batch errors carry the instance index; the batch size is bounded."""
        dec = Decoder(make_manifest(), max_batch=2)
        good = {"user_id": "u-1", "features": GOOD}
        with pytest.raises(ValidationFailed) as info:
            dec.decode_batch(
                orjson.dumps({"instances": [good, {"user_id": "u-2", "features": {**GOOD, "visits": "3"}}]})
            )
        assert locs(info.value.detail) == {("body", "instances", 1, "features", "visits")}
        with pytest.raises(ValidationFailed):
            dec.decode_batch(orjson.dumps({"instances": [good, good, good]}))
        with pytest.raises(ValidationFailed):
            dec.decode_batch(orjson.dumps({"instances": []}))
        assert len(dec.decode_batch(orjson.dumps({"instances": [good, good]}))) == 2

    def test_batch_over_the_limit_is_refused_after_one_pass(self):
        """More instances than the limit is the whole answer, found by the first pass: the body (up to 8 MB)
        is not parsed again for other problems' names."""

        class NoSecondPass:
            def validate_json(self, body: bytes) -> None:
                raise AssertionError("validated a second time")

        dec = Decoder(make_manifest(), max_batch=2)
        dec._batch = NoSecondPass()  # the strict adapter the second pass would use
        good = {"user_id": "u-1", "features": GOOD}
        bad = {"user_id": "u-2", "features": {**GOOD, "colour": "red"}}
        with pytest.raises(ValidationFailed) as info:
            dec.decode_batch(orjson.dumps({"instances": [good, bad, good]}))
        assert [(d["loc"], d["type"]) for d in info.value.detail] == [(["body", "instances"], "too_long")]

"""Property tests of the strict decoder, over random manifests and random bodies.

The example-based tests (``tests/unit/test_schema.py``) pin the rules; these
check them for any manifest: every conforming body decodes to exactly what was
sent, every body with one defect is a 422 whose detail and summary name the
offending field, and no input at all (random JSON, random bytes) raises
anything but that 422.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.errors import ValidationFailed
from app.model.decoder import FLOAT32_MAX, MAX_STRING, Decoder
from app.model.manifest import Manifest

DTYPES = ("float", "int", "bool", "string")
NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
PROPS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    names = draw(st.lists(NAMES, min_size=1, max_size=6, unique=True))
    features = [
        {
            "name": n,
            "dtype": draw(st.sampled_from(DTYPES)),
            "source": "request",
            "nullable": draw(st.booleans()),
        }
        for n in names
    ]
    if draw(st.booleans()):
        features.append({"name": "store_only", "dtype": "float", "source": "store"})
    return Manifest.model_validate(
        {
            "version": "v1",
            "created_at": "2026-01-01T00:00:00Z",
            "task": "binary_classification",
            "features": features,
            "outputs": {},
            "sample": {"request": {}, "row": {}, "expected": {}},
            "files": {},
        }
    )


# Finite in float32, the model's type: larger magnitudes are refused (float32_range).
FINITE = st.floats(allow_nan=False, allow_infinity=False, min_value=-FLOAT32_MAX, max_value=FLOAT32_MAX)
GOOD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "float": FINITE | st.integers(-(2**53), 2**53),  # JSON does not tell 1 from 1.0
    "int": st.integers(-(2**63), 2**63 - 1),
    "bool": st.booleans(),
    "string": st.text(max_size=MAX_STRING),
}
# Values of the wrong JSON type for each dtype (strict: no coercion at all).
BAD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "float": st.text(max_size=5) | st.booleans() | st.just([1.0]) | st.just({"v": 1.0}),
    # Any float, whole ones too: JSON writes 2.0 as "2.0", which a strict int refuses.
    "int": st.text(max_size=5) | st.booleans() | st.floats(),
    "bool": st.integers(0, 1) | st.sampled_from(["true", "false", "1", ""]) | st.just(1.0),
    "string": FINITE | st.integers() | st.booleans() | st.just(["ios"]) | st.just({"s": "ios"}),
}


@st.composite
def conforming(draw: st.DrawFn, m: Manifest) -> dict[str, Any]:
    features = {}
    for f in m.request_features:
        value = draw(GOOD_VALUES[f.dtype] | st.none()) if f.nullable else draw(GOOD_VALUES[f.dtype])
        features[f.name] = value
    body: dict[str, Any] = {"features": features}
    if m.store_features or draw(st.booleans()):
        body["user_id"] = draw(st.text(min_size=1, max_size=128))
    if draw(st.booleans()):
        body["request_id"] = draw(st.text(min_size=1, max_size=128))
    return body


def _dumps(body: Any) -> bytes:
    return json.dumps(body, allow_nan=False).encode()


def _assert_names(err: ValidationFailed, loc: list[Any]) -> None:
    assert err.status_code == 422
    locs = [d["loc"] for d in err.detail]
    assert any(list(got[: len(loc)]) == loc for got in locs), (loc, locs)
    dotted = ".".join(str(p) for p in loc[1:])
    assert dotted in err.message, (dotted, err.message)


class TestConformingBodies:
    @PROPS
    @given(data=st.data(), m=manifests())
    def test_every_conforming_body_decodes_to_what_was_sent(self, data: st.DataObject, m: Manifest) -> None:
        """Any body that follows the manifest decodes; features, user and request id come back unchanged."""
        body = data.draw(conforming(m))
        decoded = Decoder(m).decode(_dumps(body))
        assert decoded.features == body["features"]
        assert decoded.user_id == body.get("user_id")
        assert decoded.request_id == body.get("request_id")

    @PROPS
    @given(data=st.data(), m=manifests())
    def test_batch_of_conforming_instances_decodes_in_order(self, data: st.DataObject, m: Manifest) -> None:
        """A batch of conforming instances decodes instance by instance, in order."""
        instances = data.draw(st.lists(conforming(m), min_size=1, max_size=5))
        decoded = Decoder(m).decode_batch(_dumps({"instances": instances}))
        assert [d.features for d in decoded] == [i["features"] for i in instances]


class TestOneDefect:
    @PROPS
    @given(data=st.data(), m=manifests())
    def test_wrong_type_is_422_naming_the_feature(self, data: st.DataObject, m: Manifest) -> None:
        """A value of the wrong JSON type (no coercion: no "1" for 1, no 1 for true) names its feature."""
        body = data.draw(conforming(m))
        f = data.draw(st.sampled_from(m.request_features))
        body["features"][f.name] = data.draw(BAD_VALUES[f.dtype])
        with pytest.raises(ValidationFailed) as info:
            Decoder(m).decode(json.dumps(body).encode())
        _assert_names(info.value, ["body", "features", f.name])

    @PROPS
    @given(data=st.data(), m=manifests(), literal=st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e999"]))
    def test_non_finite_float_is_422_naming_the_feature(self, data: st.DataObject, m: Manifest, literal: str) -> None:
        """NaN/Infinity literals and numbers that overflow a double are refused for a float feature."""
        floats = [f for f in m.request_features if f.dtype == "float"]
        if not floats:
            return
        f = data.draw(st.sampled_from(floats))
        body = data.draw(conforming(m))
        body["features"][f.name] = "__PLACEHOLDER__"
        raw = _dumps(body).replace(b'"__PLACEHOLDER__"', literal.encode())
        with pytest.raises(ValidationFailed) as info:
            Decoder(m).decode(raw)
        _assert_names(info.value, ["body", "features", f.name])

    @PROPS
    @given(data=st.data(), m=manifests())
    def test_null_where_not_nullable_is_422(self, data: st.DataObject, m: Manifest) -> None:
        """``null`` is refused for a feature that is not nullable."""
        strict = [f for f in m.request_features if not f.nullable]
        if not strict:
            return
        f = data.draw(st.sampled_from(strict))
        body = data.draw(conforming(m))
        body["features"][f.name] = None
        with pytest.raises(ValidationFailed) as info:
            Decoder(m).decode(_dumps(body))
        _assert_names(info.value, ["body", "features", f.name])

    @PROPS
    @given(data=st.data(), m=manifests())
    def test_missing_feature_is_422_naming_it(self, data: st.DataObject, m: Manifest) -> None:
        """A feature left out, even a nullable one, is named."""
        f = data.draw(st.sampled_from(m.request_features))
        body = data.draw(conforming(m))
        del body["features"][f.name]
        with pytest.raises(ValidationFailed) as info:
            Decoder(m).decode(_dumps(body))
        _assert_names(info.value, ["body", "features", f.name])

    @PROPS
    @given(data=st.data(), m=manifests(), extra=NAMES)
    def test_unknown_feature_is_422_naming_it(self, data: st.DataObject, m: Manifest, extra: str) -> None:
        """A name the manifest does not have (including a store feature) is named."""
        if extra in {f.name for f in m.request_features}:
            return
        body = data.draw(conforming(m))
        body["features"][extra] = 1.0
        with pytest.raises(ValidationFailed) as info:
            Decoder(m).decode(_dumps(body))
        _assert_names(info.value, ["body", "features", extra])

    @PROPS
    @given(data=st.data(), m=manifests())
    def test_overlong_string_is_422_naming_the_feature(self, data: st.DataObject, m: Manifest) -> None:
        """Strings are bounded to MAX_STRING characters."""
        strings = [f for f in m.request_features if f.dtype == "string"]
        if not strings:
            return
        f = data.draw(st.sampled_from(strings))
        body = data.draw(conforming(m))
        body["features"][f.name] = "x" * (MAX_STRING + data.draw(st.integers(1, 1000)))
        with pytest.raises(ValidationFailed) as info:
            Decoder(m).decode(_dumps(body))
        _assert_names(info.value, ["body", "features", f.name])

    @PROPS
    @given(data=st.data(), m=manifests(), bad=st.none() | st.just("") | st.integers() | st.text(min_size=129))
    def test_bad_user_id_is_422_naming_it(self, data: st.DataObject, m: Manifest, bad: Any) -> None:
        """With store features the user id is required: a null, empty, numeric or overlong one is named."""
        if not m.store_features:
            return
        body = data.draw(conforming(m))
        body["user_id"] = bad
        with pytest.raises(ValidationFailed) as info:
            Decoder(m).decode(_dumps(body))
        _assert_names(info.value, ["body", "user_id"])


JSON = st.recursive(
    st.none() | st.booleans() | FINITE | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


class TestAnyInput:
    @PROPS
    @given(m=manifests(), value=JSON)
    def test_any_json_is_decoded_or_422(self, m: Manifest, value: Any) -> None:
        """Whatever JSON arrives, the decoder answers with a result or a 422, never another exception."""
        decoder = Decoder(m)
        raw = _dumps(value)
        for decode in (decoder.decode, decoder.decode_batch):
            try:
                decode(raw)
            except ValidationFailed as err:
                assert err.status_code == 422 and err.detail

    @PROPS
    @given(m=manifests(), raw=st.binary(max_size=200))
    def test_any_bytes_are_decoded_or_422(self, m: Manifest, raw: bytes) -> None:
        """Random bytes (truncated JSON, invalid UTF-8) are a 422, never a crash."""
        try:
            Decoder(m).decode(raw)
        except ValidationFailed as err:
            assert err.status_code == 422 and err.detail

    @PROPS
    @given(data=st.data(), m=manifests(), cut=st.integers(1, 10_000))
    def test_truncated_conforming_body_is_422(self, data: st.DataObject, m: Manifest, cut: int) -> None:
        """Any strict prefix of a conforming body is a 422 (never silently accepted)."""
        raw = _dumps(data.draw(conforming(m)))
        prefix = raw[: min(cut, len(raw) - 1)]
        with pytest.raises(ValidationFailed) as info:
            Decoder(m).decode(prefix)
        assert info.value.status_code == 422

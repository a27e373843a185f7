"""The strict request decoder, generated from a model's manifest.

Nothing here is written per model: the request body types are built from the
manifest's ``request`` features with pydantic-core doing the parsing straight
from the raw JSON bytes (no intermediate ``json.loads``). Strict means:

* no string for a number, no bool for a number (an int is accepted for a
  float: JSON does not distinguish ``1`` from ``1.0``);
* floats must be finite (``NaN``/``Infinity`` literals are refused) and
  within float32's range (``FLOAT32_MAX``): the model computes in float32,
  where ``1e308`` would arrive as infinity;
* ints must fit in 64 bits (``INT64_MIN``..``INT64_MAX``, V2's ``INT64``):
  JSON has no bound, and an exact ``10**400`` fits no tensor;
* ``null`` only where the feature is nullable — a nullable feature must
  still be present;
* unknown and missing names are refused;
* strings are bounded (``MAX_STRING``) and unknown categories are accepted
  (the pipeline's one-hot encoder ignores them), so a new category is not a
  client error.
* an optional top-level ``attributes`` object (at most 32 names, each a
  string, int or bool) carries routing attributes for rollout flags
  (``app.rollout.flags``); it never reaches the model.

Every problem is reported, each with its ``loc`` (``["body", "features",
"amount"]``), so a client can fix all of them in one go (beyond
``app.errors.COLLECT_LIMIT`` unknown names, the first are listed and all
counted).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, NamedTuple, NotRequired

import orjson
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from app.errors import COLLECT_LIMIT, ValidationFailed, from_pydantic
from app.model.manifest import Feature, Manifest

MAX_STRING = 256
MAX_ID = 128
USER_ID = Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID)]
REQUEST_ID = Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID)]
MAX_ATTRIBUTES = 32


def _few_attributes(value: Any) -> Any:
    # Refuse an oversized object before its keys are checked one by one: 100,000 bad
    # names would otherwise cost seconds and hundreds of thousands of errors.
    if isinstance(value, dict) and len(value) > MAX_ATTRIBUTES:
        raise PydanticCustomError(
            "too_long",
            "Dictionary should have at most {max_length} items after validation, not {actual_length}",
            {"max_length": MAX_ATTRIBUTES, "actual_length": len(value)},
        )
    return value


# Optional routing attributes for rollout flags (country, cohort, ...): never model inputs.
ATTRIBUTES = Annotated[
    dict[
        Annotated[StrictStr, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")],
        Annotated[StrictStr, Field(max_length=MAX_STRING)] | StrictInt | StrictBool,
    ],
    # The schema must refuse names outside the pattern too, as the decoder does.
    Field(max_length=MAX_ATTRIBUTES, json_schema_extra={"additionalProperties": False}),
    BeforeValidator(_few_attributes),
]

_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
# The same rules but unknown names kept rather than refused: the request path's first pass,
# whose cost does not grow with thousands of unknown names (see ``Decoder``).
_KEEP_EXTRA = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)
_INSTANCE_KEYS = frozenset({"user_id", "features", "request_id", "attributes"})
_EXTRA = "Extra inputs are not permitted"

FLOAT32_MAX = 3.4028234663852886e38
"""The largest finite float32."""
FLOAT32_OVERFLOW = 2.0**128 * (1 - 2.0**-25)
"""The smallest magnitude that rounds to infinity in float32 (``FLOAT32_MAX`` plus half a step)."""
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
"""The bounds of an int feature: a 64-bit integer, as V2's ``INT64`` tensors and the prediction log hold."""
FLOAT32_RANGE = ("float32_range", "Input should be a number within float32's range (magnitude at most 3.4028235e+38)")


def _within_float32(value: float) -> float:
    if not -FLOAT32_OVERFLOW < value < FLOAT32_OVERFLOW:
        raise PydanticCustomError(*FLOAT32_RANGE)
    return value


_TYPES: dict[str, Any] = {
    "float": Annotated[
        float,
        Field(
            strict=True,
            allow_inf_nan=False,
            json_schema_extra={"minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX},
        ),
        AfterValidator(_within_float32),
    ],
    "int": Annotated[int, Field(strict=True, ge=INT64_MIN, le=INT64_MAX)],
    "bool": StrictBool,
    "string": Annotated[StrictStr, Field(max_length=MAX_STRING)],
}


_FIRST_PASS_TYPES = {
    **_TYPES,
    # The same range checked in pydantic-core: an AfterValidator is a Python call per float (~0.3 µs,
    # a fifth of a batch's validation). Its error type differs, so only the first pass uses it: a body it
    # refuses is validated again strictly for the answer (past COLLECT_LIMIT unknown names, its errors
    # are only counted).
    "float": Annotated[float, Field(strict=True, allow_inf_nan=False, gt=-FLOAT32_OVERFLOW, lt=FLOAT32_OVERFLOW)],
}


def _feature_type(f: Feature, types: Mapping[str, Any] = _TYPES) -> Any:
    t = types[f.dtype]
    return t | None if f.nullable else t


def _column_check(f: Feature) -> Callable[[Sequence[Any]], bool]:
    """Whether every value of a column is one ``_feature_type(f)`` takes as it is (see ``validate_columns``).

    Built of passes that run in C (``map``, ``min``, ``max``, ``sum``): a column of exact types,
    and for floats a finite sum (no NaN, no ±Inf) and every value within float32, for ints 64 bits.
    """
    kind = {"float": float, "int": int, "bool": bool, "string": str}[f.dtype]  # exactly: a bool is no int here
    allowed = {kind, type(None)} if f.nullable else {kind}

    def check(col: Sequence[Any]) -> bool:
        types = set(map(type, col))
        if not types <= allowed:
            return False
        if type(None) in types:
            col = [v for v in col if v is not None]
            if not col:
                return True
        if kind is float:
            return math.isfinite(sum(col)) and min(col) > -FLOAT32_OVERFLOW and max(col) < FLOAT32_OVERFLOW
        if kind is str:
            return max(map(len, col)) <= MAX_STRING
        if kind is int:
            return min(col) >= INT64_MIN and max(col) <= INT64_MAX
        return True

    return check


def _typed_dict(name: str, fields: dict[str, Any], config: ConfigDict = _STRICT) -> Any:
    # Built from the manifest at run time, which a static checker cannot follow.
    td: Any = TypedDict(name, fields)  # type: ignore[misc]
    setattr(td, "__pydantic_config__", config)  # noqa: B010  (the attribute pydantic reads)
    return td


def _over_the_batch_limit(exc: ValidationError) -> bool:
    """Whether the batch's one problem is having more instances than the limit."""
    if exc.error_count() != 1:
        return False
    (error,) = exc.errors(include_url=False, include_context=False, include_input=False)
    return error["type"] == "too_long" and error["loc"] == ("instances",)


class Decoded(NamedTuple):
    """One validated instance (a named tuple: a batch builds one per row, at half a dataclass's cost)."""

    user_id: str | None
    features: dict[str, Any]
    request_id: str | None = None
    attributes: dict[str, Any] | None = None
    """Routing attributes for rollout flags (the optional top-level ``attributes`` object)."""


class Decoder:
    """Validates /predict and /predict/batch bodies for one input signature.

    Each body is first validated with unknown names kept, then checked for
    them: for pydantic, refusing names costs one error each, and a body of
    thousands of unknown keys took seconds and answered megabytes. A body
    with problems is validated again strictly, so the answer lists exactly
    pydantic's errors, unless it has more than ``COLLECT_LIMIT`` unknown
    names: then the first of those and the body's other problems are listed,
    and all of them counted.
    """

    def __init__(self, manifest: Manifest, max_batch: int = 1000) -> None:
        self.signature = manifest.input_signature()
        self._feature_names = frozenset(f.name for f in manifest.request_features)
        self._column_checks = [(f.name, _column_check(f)) for f in manifest.request_features]
        self._column_names = [f.name for f in manifest.request_features]
        self._needs_user = bool(manifest.store_features)
        instance, batch = self._types(manifest, max_batch, _STRICT)
        kept_instance, kept_batch = self._types(manifest, max_batch, _KEEP_EXTRA, _FIRST_PASS_TYPES)
        self._one = TypeAdapter(instance)
        self._batch = TypeAdapter(batch)
        self._one_kept = TypeAdapter(kept_instance)
        self._batch_kept = TypeAdapter(kept_batch)

    def _types(
        self, manifest: Manifest, max_batch: int, config: ConfigDict, types: Mapping[str, Any] = _TYPES
    ) -> tuple[Any, Any]:
        features = {f.name: _feature_type(f, types) for f in manifest.request_features}
        features_td = _typed_dict("Features", features, config)
        user_t: Any = USER_ID if manifest.store_features else NotRequired[USER_ID | None]
        instance = _typed_dict(
            "Instance",
            {
                "user_id": user_t,
                "features": features_td,
                "request_id": NotRequired[REQUEST_ID],
                "attributes": NotRequired[ATTRIBUTES],
            },
            config,
        )
        batch = _typed_dict(
            "BatchRequest",
            {"instances": Annotated[list[instance], Field(min_length=1, max_length=max_batch)]},  # type: ignore[valid-type]
            config,
        )
        return instance, batch

    # --- decoding ----------------------------------------------------------
    def decode(self, body: bytes) -> Decoded:
        try:
            obj = self._one_kept.validate_json(body)
        except ValidationError as exc:
            raise self._refused(body, exc, batch=False) from None
        if self._has_extra(obj):
            raise self._refused(body, None, batch=False)
        return Decoded(obj.get("user_id"), obj["features"], obj.get("request_id"), obj.get("attributes"))

    def decode_batch(self, body: bytes) -> list[Decoded]:
        try:
            obj = self._batch_kept.validate_json(body)
        except ValidationError as exc:
            if _over_the_batch_limit(exc):
                # That is the answer (pydantic reports nothing else then): no second and third pass over a body
                # this large for the names of other problems; only an unknown top-level key goes unreported.
                raise from_pydantic(exc) from None
            raise self._refused(body, exc, batch=True) from None
        instances = obj["instances"]
        features = [i["features"] for i in instances]
        # ``_has_extra`` of every instance at once: each holds every feature, so any extra one shows in the total.
        if (
            len(obj) != 1
            or sum(map(len, features)) != len(self._feature_names) * len(features)
            or not set().union(*instances) <= _INSTANCE_KEYS
        ):
            raise self._refused(body, None, batch=True)
        make = tuple.__new__  # Decoded(...) without the named tuple's Python-level __new__, once per row
        return [
            make(Decoded, (i.get("user_id"), f, i.get("request_id"), i.get("attributes")))
            for i, f in zip(instances, features, strict=True)
        ]

    def _has_extra(self, instance: dict[str, Any]) -> bool:
        # Every feature is required, so more keys than features means an unknown one.
        return len(instance["features"]) != len(self._feature_names) or not instance.keys() <= _INSTANCE_KEYS

    def _refused(self, body: bytes, kept_exc: ValidationError | None, batch: bool) -> ValidationFailed:
        """The error for a body the first pass refused (``kept_exc``) or found unknown names in."""
        extra, count = self._extra_names(body, batch)
        if count <= COLLECT_LIMIT:
            try:
                (self._batch if batch else self._one).validate_json(body)
            except ValidationError as exc:
                return from_pydantic(exc)
        # Too many unknown names to have pydantic report each: list the first, count them all.
        listed = [{"loc": loc, "msg": _EXTRA, "type": "extra_forbidden"} for loc in extra]
        # Only counted, never listed (``listed`` fills the detail), so their types (the first pass's) do not show.
        others = kept_exc.errors(include_url=False, include_context=False, include_input=False) if kept_exc else []
        return from_pydantic([*listed, *others], total=count + len(others))

    def _extra_names(self, body: bytes, batch: bool) -> tuple[list[tuple[str | int, ...]], int]:
        """Where unknown names are (the first ``COLLECT_LIMIT + 1``) and how many there are."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return [], 0  # not JSON orjson reads: the strict pass says what is wrong
        found: list[tuple[str | int, ...]] = []
        count = 0

        def instance(obj: Any, where: tuple[str | int, ...]) -> None:
            nonlocal count
            if not isinstance(obj, dict):
                return
            names = [(*where, k) for k in obj if k not in _INSTANCE_KEYS]
            features = obj.get("features")
            if isinstance(features, dict):
                names += [(*where, "features", k) for k in features if k not in self._feature_names]
            count += len(names)
            found.extend(names[: COLLECT_LIMIT + 1 - len(found)])

        if not batch:
            instance(doc, ())
        elif isinstance(doc, dict):
            top = [(k,) for k in doc if k != "instances"]
            count += len(top)
            found.extend(top[: COLLECT_LIMIT + 1])
            items = doc.get("instances")
            if isinstance(items, list):
                for i, item in enumerate(items):
                    instance(item, ("instances", i))
        return found, count

    def validate_python(self, instance: Any, loc: tuple[str | int, ...] = ()) -> Decoded:
        """Validate an already-parsed instance (batch files, the V2 protocol)."""
        try:
            obj = self._one.validate_python(instance)
        except ValidationError as exc:
            raise from_pydantic(exc, loc) from None
        return Decoded(obj.get("user_id"), obj["features"], obj.get("request_id"), obj.get("attributes"))

    def validate_columns(
        self, columns: Mapping[str, Sequence[Any]], n: int, request_ids: Sequence[str], users: Sequence[Any] | None
    ) -> list[Decoded] | None:
        """``validate_python`` of each of ``n`` rows held as columns (one per feature), checked column by column.

        For many rows at once (V2 tensors): one pass over each column instead of
        a validation per row. Only what every rule plainly accepts passes (exact
        types, finite floats within float32, strings and ids within their
        bounds); for anything else the answer is None, and the caller validates
        row by row to say what is wrong (or to accept what only looked unusual).
        """
        for name, check in self._column_checks:
            if not check(columns[name]):
                return None
        if users is None:
            if self._needs_user:
                return None
            users = [None] * n
        elif set(map(type, users)) != {str} or not 0 < min(map(len, users)) <= max(map(len, users)) <= MAX_ID:
            return None
        if not 0 < len(request_ids[0]) <= len(request_ids[-1]) <= MAX_ID:
            return None  # the ids differ only by their row number: the first and the longest
        names = self._column_names
        rows = zip(*(columns[name] for name in names), strict=True)
        make = tuple.__new__  # Decoded(...) without the named tuple's Python-level __new__, once per row
        return [
            make(Decoded, (user, dict(zip(names, values, strict=True)), rid, None))
            for user, values, rid in zip(users, rows, request_ids, strict=True)
        ]

    # --- schema ------------------------------------------------------------
    def json_schema(self) -> dict[str, Any]:
        return self._one.json_schema()

    def batch_json_schema(self) -> dict[str, Any]:
        return self._batch.json_schema()

"""The strict request decoder, generated from a model's manifest.

Nothing here is written per model: the request body types are built from the
manifest's ``request`` features with pydantic-core doing the parsing straight
from the raw JSON bytes (no intermediate ``json.loads``). Strict means:

* no string for a number, no bool for a number (an int is accepted for a
  float: JSON does not distinguish ``1`` from ``1.0``);
* floats must be finite (``NaN``/``Infinity`` literals are refused) and
  within float32's range (``FLOAT32_MAX``): the model computes in float32,
  where ``1e308`` would arrive as infinity;
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
"amount"]``), so a client can fix all of them in one go.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, NotRequired

from pydantic import AfterValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr, TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from app.errors import from_pydantic
from app.model.manifest import Feature, Manifest

MAX_STRING = 256
USER_ID = Annotated[StrictStr, Field(min_length=1, max_length=128)]
REQUEST_ID = Annotated[StrictStr, Field(min_length=1, max_length=128)]
# Optional routing attributes for rollout flags (country, cohort, ...): never model inputs.
ATTRIBUTES = Annotated[
    dict[
        Annotated[StrictStr, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")],
        Annotated[StrictStr, Field(max_length=MAX_STRING)] | StrictInt | StrictBool,
    ],
    # The schema must refuse names outside the pattern too, as the decoder does.
    Field(max_length=32, json_schema_extra={"additionalProperties": False}),
]

_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

FLOAT32_MAX = 3.4028234663852886e38
"""The largest finite float32."""
FLOAT32_OVERFLOW = 2.0**128 * (1 - 2.0**-25)
"""The smallest magnitude that rounds to infinity in float32 (``FLOAT32_MAX`` plus half a step)."""
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
    "int": StrictInt,
    "bool": StrictBool,
    "string": Annotated[StrictStr, Field(max_length=MAX_STRING)],
}


def _feature_type(f: Feature) -> Any:
    t = _TYPES[f.dtype]
    return t | None if f.nullable else t


def _typed_dict(name: str, fields: dict[str, Any]) -> Any:
    # Built from the manifest at run time, which a static checker cannot follow.
    td: Any = TypedDict(name, fields)  # type: ignore[misc]
    setattr(td, "__pydantic_config__", _STRICT)  # noqa: B010  (the attribute pydantic reads)
    return td


@dataclass(frozen=True)
class Decoded:
    """One validated instance."""

    user_id: str | None
    features: dict[str, Any]
    request_id: str | None = None
    attributes: dict[str, Any] | None = None
    """Routing attributes for rollout flags (the optional top-level ``attributes`` object)."""


class Decoder:
    """Validates /predict and /predict/batch bodies for one input signature."""

    def __init__(self, manifest: Manifest, max_batch: int = 1000) -> None:
        self.signature = manifest.input_signature()
        self.request_features = [f.name for f in manifest.request_features]
        self.needs_user = bool(manifest.store_features)
        features_td = _typed_dict("Features", {f.name: _feature_type(f) for f in manifest.request_features})
        self.features_type = features_td
        user_t: Any = USER_ID if self.needs_user else NotRequired[USER_ID | None]
        instance = _typed_dict(
            "Instance",
            {
                "user_id": user_t,
                "features": features_td,
                "request_id": NotRequired[REQUEST_ID],
                "attributes": NotRequired[ATTRIBUTES],
            },
        )
        self.instance_type = instance
        batch = _typed_dict(
            "BatchRequest",
            {"instances": Annotated[list[instance], Field(min_length=1, max_length=max_batch)]},  # type: ignore[valid-type]
        )
        self._one = TypeAdapter(instance)
        self._batch = TypeAdapter(batch)

    # --- decoding ----------------------------------------------------------
    def decode(self, body: bytes) -> Decoded:
        try:
            obj = self._one.validate_json(body)
        except ValidationError as exc:
            raise from_pydantic(exc) from None
        return Decoded(obj.get("user_id"), obj["features"], obj.get("request_id"), obj.get("attributes"))

    def decode_batch(self, body: bytes) -> list[Decoded]:
        try:
            obj = self._batch.validate_json(body)
        except ValidationError as exc:
            raise from_pydantic(exc) from None
        return [
            Decoded(i.get("user_id"), i["features"], i.get("request_id"), i.get("attributes")) for i in obj["instances"]
        ]

    def validate_python(self, instance: Any, loc: tuple[str | int, ...] = ()) -> Decoded:
        """Validate an already-parsed instance (batch files, the V2 protocol)."""
        try:
            obj = self._one.validate_python(instance)
        except ValidationError as exc:
            raise from_pydantic(exc, loc) from None
        return Decoded(obj.get("user_id"), obj["features"], obj.get("request_id"), obj.get("attributes"))

    # --- schema ------------------------------------------------------------
    def json_schema(self) -> dict[str, Any]:
        return self._one.json_schema()

    def batch_json_schema(self) -> dict[str, Any]:
        return self._batch.json_schema()

"""The model manifest (``manifest.json``, DESIGN §3) as a typed object."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DType = Literal["float", "int", "string", "bool"]


class Feature(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    dtype: DType
    source: Literal["request", "store"]
    nullable: bool = False
    categories: list[str] | None = None


class Outputs(BaseModel):
    label: str = "label"
    probabilities: str = "probabilities"
    classes: list[int] = [0, 1]
    positive_class: int = 1


class Sample(BaseModel):
    request: dict[str, Any]
    row: dict[str, Any]
    expected: dict[str, Any]


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    version: str
    created_at: str
    task: str
    estimator: str | None = None
    features: list[Feature]
    outputs: Outputs
    sample: Sample
    reference: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    files: dict[str, str]
    libraries: dict[str, str] = {}

    @property
    def request_features(self) -> list[Feature]:
        return [f for f in self.features if f.source == "request"]

    @property
    def store_features(self) -> list[Feature]:
        return [f for f in self.features if f.source == "store"]

    def input_signature(self) -> tuple[tuple[str, str, str, bool], ...]:
        """What a request must look like for this version (equal signatures share a decoder)."""
        return tuple((f.name, f.dtype, f.source, f.nullable) for f in self.features)

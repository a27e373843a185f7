"""The model manifest (``manifest.json``) as one typed object: the contract between training and serving.

A version directory holds ``manifest.json`` next to its artifacts. Training
builds a ``Manifest`` and writes it; the repository, the runtime, the request
decoder and the drift job read it back through this same type. ``Feature`` is
the one description of a model input, used by training (``FEATURES``) and
serving alike.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DType = Literal["float", "int", "string", "bool"]
Source = Literal["request", "store"]


class Feature(BaseModel):
    """One model input: name, type, where it comes from, what it may hold."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    dtype: DType
    source: Source
    """``request``: sent by the client; ``store``: fetched from the feature tiers by user id."""
    nullable: bool = False
    categories: tuple[str, ...] | None = None
    """The known values of a string feature (others are accepted and one-hot encoded as none)."""


class Outputs(BaseModel):
    """Names of the ONNX graph's outputs and the class whose probability is reported."""

    label: str = "label"
    probabilities: str = "probabilities"
    classes: list[int] = [0, 1]
    positive_class: int = 1


class Sample(BaseModel):
    """A valid request, the full model input it resolves to, and the output expected for it (the self-check)."""

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
    """In model input order: the ONNX graph has one input per feature, in this order."""
    outputs: Outputs
    sample: Sample
    reference: dict[str, Any] = {}
    """Training distributions (``app.model.reference``): ``{"features": {name: spec}, "prediction": spec}``."""
    metrics: dict[str, Any] = {}
    files: dict[str, str]
    """sha256 of each artifact file in the version directory, by file name."""
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

    def to_json(self) -> str:
        """The ``manifest.json`` text: every field, in declaration order, indented."""
        return json.dumps(self.model_dump(), indent=2) + "\n"

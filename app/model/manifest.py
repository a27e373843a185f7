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

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator

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


Task = Literal["binary_classification", "multiclass_classification", "regression"]
ClassLabel = StrictInt | StrictStr


class Outputs(BaseModel):
    """Names of the ONNX outputs and, for classifiers, the classes in the estimator's order.

    Classification: ``label`` ([N] labels), ``probabilities`` ([N, K] in
    ``classes`` order), ``classes`` (ints or strings; JSON keeps the type) and,
    binary only, ``positive_class`` (the class whose probability is reported,
    ``classes[1]`` by scikit-learn convention). Regression: ``prediction``
    ([N] or [N, 1] values) and nothing else. The defaults are the demo binary
    model's; a regression manifest's missing classification fields are null
    (see ``Manifest``).
    """

    label: str | None = "label"
    probabilities: str | None = "probabilities"
    classes: list[StrictInt] | list[StrictStr] | None = [0, 1]
    positive_class: ClassLabel | None = 1
    prediction: str | None = None


class Sample(BaseModel):
    """A valid request, the full model input it resolves to, and the output expected for it (the self-check)."""

    request: dict[str, Any]
    row: dict[str, Any]
    expected: dict[str, Any]


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    version: str
    created_at: str
    task: Task
    estimator: str | None = None
    features: list[Feature]
    """In model input order: the ONNX graph has one input per feature, in this order."""
    outputs: Outputs
    sample: Sample
    reference: dict[str, Any] = {}
    """Training distributions (``app.model.reference``): ``{"features": {name: spec}, "prediction": spec}``."""
    metrics: dict[str, Any] = {}
    parity: dict[str, Any] = {}
    """Publish-time agreement of the ONNX graph with the fitted pipeline on held-out rows."""
    calibration: dict[str, Any] | None = None
    """Binary models: the map from served to calibrated probability fitted on the holdout
    (``app.quality.calibration``), for the label-free quality estimate; None where it does not apply."""
    files: dict[str, str]
    """sha256 of each artifact file in the version directory, by file name."""
    libraries: dict[str, str] = {}

    @model_validator(mode="before")
    @classmethod
    def _regression_has_no_classes(cls, data: Any) -> Any:
        # Outputs' defaults describe a binary model; a regression manifest need not null them one by one.
        if isinstance(data, dict) and data.get("task") == "regression" and isinstance(data.get("outputs"), dict):
            blank = {"label": None, "probabilities": None, "classes": None, "positive_class": None}
            data = {**data, "outputs": {**blank, **data["outputs"]}}
        return data

    @model_validator(mode="after")
    def _outputs_match_task(self) -> Manifest:
        o = self.outputs
        if self.task == "regression":
            if not o.prediction or o.label or o.probabilities or o.classes or o.positive_class is not None:
                raise ValueError("regression outputs name `prediction` only")
            return self
        if not o.label or not o.probabilities or not o.classes or o.prediction:
            raise ValueError("classification outputs name `label`, `probabilities` and `classes`")
        if len(set(o.classes)) != len(o.classes):
            raise ValueError("outputs.classes has duplicates")
        if self.task == "binary_classification":
            if len(o.classes) != 2 or o.positive_class not in o.classes:
                raise ValueError("binary outputs need two classes and a positive_class among them")
        elif len(o.classes) < 3 or o.positive_class is not None:
            raise ValueError("multiclass outputs need three or more classes and no positive_class")
        return self

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
        """The ``manifest.json`` text: every field, in declaration order, indented.

        Output fields that do not apply to the task are left out, so a binary
        manifest reads exactly as it did before regression outputs existed.
        """
        document = self.model_dump(mode="json")
        # Only a null that is also the default can go: reading it back must give the same manifest.
        defaults = Outputs.model_fields
        document["outputs"] = {
            k: v for k, v in document["outputs"].items() if v is not None or defaults[k].default is not None
        }
        return json.dumps(document, indent=2) + "\n"

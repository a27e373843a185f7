"""What the service answers per task, from the runtime's ``Scores``: one place for every serving path.

An answer is ``(prediction, probability, probabilities)``:

* binary: the label (an int, or a str for string classes), the probability
  of the positive class, ``None``;
* multiclass: the label, the probability of that label, and every class's
  probability as ``{str(class): p}`` in the manifest's ``classes`` order
  (JSON object keys are strings);
* regression: the predicted value as a float, ``None``, ``None``.

``/predict``, ``/predict/batch``, V2, the batch job, the prediction log and
the shadow all answer through this, so they cannot disagree on a model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app.model.manifest import Manifest
from app.model.runtime import Scores

Answer = tuple[Any, float | None, dict[str, float] | None]
BINARY = "binary_classification"
MULTICLASS = "multiclass_classification"
REGRESSION = "regression"


class Answers:
    """Turns ``Scores`` of one model into answers, and knows the shape of that model's answers."""

    def __init__(self, manifest: Manifest) -> None:
        outputs = manifest.outputs
        self.task = manifest.task
        self.classes: list[Any] = list(outputs.classes or [])
        self.string_labels = bool(self.classes) and isinstance(self.classes[0], str)
        self.keys = [str(c) for c in self.classes]
        """Class names as they appear as keys of ``probabilities``."""
        self._index = {c: i for i, c in enumerate(self.classes)}
        self.positive = self.classes.index(outputs.positive_class) if self.task == BINARY else None
        """Column of the positive class in the probability matrix (binary only)."""

    def labels(self, scores: Scores) -> list[Any]:
        """Predicted labels as JSON values: str for string classes, else int."""
        assert scores.labels is not None
        if self.string_labels:
            return [v.decode() if isinstance(v, bytes) else str(v) for v in scores.labels.tolist()]
        return [int(v) for v in scores.labels.tolist()]

    def rows(self, scores: Scores) -> list[Answer]:
        """One answer per row of ``scores``."""
        if self.task == REGRESSION:
            assert scores.values is not None
            return [(v, None, None) for v in scores.values.astype(np.float64).tolist()]
        labels = self.labels(scores)
        assert scores.probabilities is not None
        if self.task == BINARY:
            positive = scores.probabilities[:, self.positive].tolist()
            return [(label, p, None) for label, p in zip(labels, positive, strict=True)]
        out: list[Answer] = []
        keys, index = self.keys, self._index
        for label, probs in zip(labels, scores.probabilities.tolist(), strict=True):
            i = index.get(label)
            out.append((label, probs[i] if i is not None else max(probs), dict(zip(keys, probs, strict=True))))
        return out

    def response_schema(self) -> dict[str, Any]:
        """JSON schema of this model's ``/predict`` answer (the OpenAPI ``PredictResponse``)."""
        label: dict[str, Any] = {"type": "string" if self.string_labels else "integer"}
        if self.classes:
            label["enum"] = self.classes
        properties: dict[str, Any] = {
            "request_id": {"type": "string"},
            "model_version": {"type": "string"},
            "prediction": {"type": "number"} if self.task == REGRESSION else label,
            "variant": {"type": "string", "description": "The rollout flag that chose the version, if any."},
        }
        required = ["request_id", "model_version", "prediction"]
        if self.task != REGRESSION:
            properties["probability"] = {
                "type": "number",
                "description": "Of the positive class" if self.task == BINARY else "Of the predicted label",
            }
            required.append("probability")
        if self.task == MULTICLASS:
            properties["probabilities"] = {
                "type": "object",
                "properties": {k: {"type": "number"} for k in self.keys},
                "required": list(self.keys),
                "additionalProperties": False,
                "description": "Every class's probability, in the model's classes order.",
            }
            required.append("probabilities")
        return {"title": "PredictResponse", "type": "object", "properties": properties, "required": required}

    def label_probability(self, scores: Scores) -> np.ndarray:
        """Per row, the probability of the predicted label (classifiers): what ``probability`` answers."""
        assert scores.probabilities is not None
        if self.task == BINARY:
            return np.asarray(scores.probabilities[:, self.positive])
        labels = self.labels(scores)
        cols = np.array([self._index.get(label, 0) for label in labels], dtype=np.int64)
        return np.asarray(scores.probabilities[np.arange(len(cols)), cols])

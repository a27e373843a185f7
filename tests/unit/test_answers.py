"""Answers per task from runtime scores: labels typed as the classes, probabilities keyed by class name."""

from __future__ import annotations

import numpy as np

from app.model.answers import Answers
from app.model.manifest import Manifest
from app.model.runtime import Scores


def answers(task: str, outputs: dict) -> Answers:
    return Answers(
        Manifest.model_validate(
            {
                "version": "v1",
                "created_at": "2026-01-01T00:00:00Z",
                "task": task,
                "features": [],
                "outputs": outputs,
                "sample": {"request": {}, "row": {}, "expected": {}},
                "files": {},
            }
        )
    )


PROBS = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]], dtype=np.float32)


class TestAnswers:
    def test_binary_string_classes(self):
        """A binary model with string classes answers the label as a string and the positive class's probability."""
        a = answers("binary_classification", {"classes": ["no", "yes"], "positive_class": "yes"})
        scores = Scores(
            labels=np.array(["yes", "no"], dtype=object), probabilities=np.array([[0.25, 0.75], [0.5, 0.5]])
        )
        assert a.rows(scores) == [("yes", 0.75, None), ("no", 0.5, None)]
        assert a.string_labels and a.label_probability(scores).tolist() == [0.75, 0.5]

    def test_multiclass_int_classes(self):
        """Int classes answer int labels; probabilities are keyed by the class as a string, in classes order."""
        a = answers("multiclass_classification", {"classes": [3, 1, 2], "positive_class": None})
        [(label, p, probs), second] = a.rows(Scores(labels=np.array([1, 3], dtype=np.int64), probabilities=PROBS))
        assert label == 1 and isinstance(label, int) and p == float(np.float32(0.7))
        assert list(probs) == ["3", "1", "2"] and list(probs.values()) == PROBS[0].tolist()
        assert second[:2] == (3, 0.5)

    def test_regression(self):
        """A regressor answers its value as a float, with no probability."""
        a = answers("regression", {"prediction": "variable"})
        rows = a.rows(Scores(values=np.array([[1.5], [-2.0]], dtype=np.float32).reshape(-1)))
        assert rows == [(1.5, None, None), (-2.0, None, None)] and isinstance(rows[0][0], float)

    def test_response_schema_per_task(self):
        """The /predict answer schema names the fields each task answers."""
        binary = answers("binary_classification", {}).response_schema()
        multi = answers("multiclass_classification", {"classes": ["a", "b", "c"], "positive_class": None})
        regression = answers("regression", {"prediction": "variable"}).response_schema()
        assert binary["required"] == ["request_id", "model_version", "prediction", "probability"]
        assert multi.response_schema()["properties"]["probabilities"]["required"] == ["a", "b", "c"]
        assert regression["required"] == ["request_id", "model_version", "prediction"]

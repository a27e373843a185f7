"""Label rules per task: what /feedback and `labels import` accept for binary, multiclass and regression models."""

from __future__ import annotations

from typing import Any

import pytest

from app.labels import LabelRules, parse_time
from app.model.manifest import Manifest


def make_manifest(task: str, outputs: dict[str, Any]) -> Manifest:
    return Manifest(
        version="v1",
        created_at="2026-01-01T00:00:00Z",
        task=task,  # type: ignore[arg-type]
        features=[{"name": "x", "dtype": "float", "source": "request"}],  # type: ignore[list-item]
        outputs=outputs,  # type: ignore[arg-type]
        sample={"request": {}, "row": {}, "expected": {}},  # type: ignore[arg-type]
        files={},
    )


BINARY = make_manifest(
    "binary_classification",
    {"label": "label", "probabilities": "probabilities", "classes": [0, 1], "positive_class": 1},
)
MULTICLASS = make_manifest(
    "multiclass_classification",
    {"label": "label", "probabilities": "probabilities", "classes": ["cat", "dog", "fox"], "positive_class": None},
)
MULTICLASS_INT = make_manifest(
    "multiclass_classification",
    {"label": "label", "probabilities": "probabilities", "classes": [3, 5, 7], "positive_class": None},
)
REGRESSION = make_manifest("regression", {"prediction": "variable"})


def problem_types(manifest: Manifest, label: Any) -> list[str]:
    _, problems = LabelRules(manifest).check({"request_id": "r1", "label": label})
    return [p["type"] for p in problems]


@pytest.mark.parametrize(
    ("manifest", "label"),
    [(BINARY, 0), (BINARY, 1), (MULTICLASS, "dog"), (MULTICLASS_INT, 7), (REGRESSION, 3), (REGRESSION, -2.5)],
)
def test_fitting_labels_accepted(manifest: Manifest, label: Any) -> None:
    """A known class of the same JSON type, or a finite number for regression, is accepted."""
    item, problems = LabelRules(manifest).check({"request_id": "r1", "label": label})
    assert problems == []
    assert item is not None and item["label"] == label


@pytest.mark.parametrize(
    ("manifest", "label", "kind"),
    [
        (BINARY, 2, "unknown_class"),
        (BINARY, "1", "label_type"),
        (BINARY, 1.0, "label_type"),
        (BINARY, True, "label_type"),
        (MULTICLASS, "wolf", "unknown_class"),
        (MULTICLASS, 1, "label_type"),
        (MULTICLASS_INT, "5", "label_type"),
        (MULTICLASS_INT, 4, "unknown_class"),
        (REGRESSION, "3.5", "float_type"),
        (REGRESSION, True, "float_type"),
        (REGRESSION, None, "float_type"),
        (REGRESSION, float("nan"), "finite_number"),
        (REGRESSION, float("inf"), "finite_number"),
    ],
)
def test_misfitting_labels_refused(manifest: Manifest, label: Any, kind: str) -> None:
    """An unknown class, a class of the wrong JSON type or a non-finite/non-number regression label is refused."""
    assert problem_types(manifest, label) == [kind]


def test_regression_label_written_as_float() -> None:
    """A regression label sent as a JSON integer is kept as a float, so the column has one type."""
    item, _ = LabelRules(REGRESSION).check({"request_id": "r1", "label": 3})
    assert item is not None and isinstance(item["label"], float)


@pytest.mark.parametrize(
    ("obj", "field", "kind"),
    [
        ({"label": 1}, "request_id", "missing"),
        ({"request_id": "", "label": 1}, "request_id", "string_too_short"),
        ({"request_id": "r" * 129, "label": 1}, "request_id", "string_too_long"),
        ({"request_id": 5, "label": 1}, "request_id", "string_type"),
        ({"request_id": "r1"}, "label", "missing"),
        ({"request_id": "r1", "label": 1, "observed_at": "yesterday"}, "observed_at", "datetime_parsing"),
        ({"request_id": "r1", "label": 1, "observed_at": 17}, "observed_at", "datetime_type"),
        ({"request_id": "r1", "label": 1, "colour": "red"}, "colour", "extra_forbidden"),
    ],
)
def test_fields_checked(obj: dict[str, Any], field: str, kind: str) -> None:
    """request_id follows /predict's limits, observed_at must be ISO 8601, unknown fields are refused: each named."""
    _, problems = LabelRules(BINARY).check(obj)
    assert [(p["loc"], p["type"]) for p in problems] == [([field], kind)]


def test_observed_at_normalised_to_utc() -> None:
    """An observed_at with an offset is written in UTC with a Z; one without a zone is taken as UTC."""
    assert parse_time("2026-03-01T10:00:00+02:00") == ("2026-03-01T08:00:00Z", None)
    assert parse_time("2026-03-01T10:00:00") == ("2026-03-01T10:00:00Z", None)


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("0001-01-01T00:00:00+00:03", "0001-01-01T00:00:00Z"),
        ("9999-12-31T23:59:59-01:00", "9999-12-31T23:59:59.999999Z"),
    ],
)
def test_times_past_the_calendar_ends_in_utc_are_clamped(text: str, stored: str) -> None:
    """A valid ISO 8601 time whose UTC instant falls before year 1 or after 9999 (an offset at the
    calendar's ends) is stored as the nearest UTC instant, not refused: the schema allows it."""
    assert parse_time(text) == (stored, None)


@pytest.mark.parametrize(
    ("manifest", "cell", "read"),
    [
        (BINARY, "1", 1),
        (BINARY, " -0 ", 0),
        (BINARY, "\u0661", "\u0661"),  # a digit of another script stays text, so the check names it
        (MULTICLASS_INT, "\uff17", "\uff17"),
        (REGRESSION, "2.5e3", 2500.0),
        (REGRESSION, "\u0661\u0662", "\u0661\u0662"),
        (REGRESSION, "1_000", "1_000"),
    ],
)
def test_csv_label_cells_read_as_ascii_numbers(manifest: Manifest, cell: str, read: Any) -> None:
    """`labels import` reads a CSV label cell as a number only when written with ASCII digits, as JSON would."""
    from app.jobs.labels_import import _from_text

    assert _from_text(cell, LabelRules(manifest)) == read

"""Ground truth: checking a label (and its request id and time) against the primary model's task.

Used by ``POST /feedback`` and ``modelserve labels import`` alike, so both
refuse the same things:

- classification: a known class of ``manifest.outputs.classes`` with the same
  JSON type (int class: a JSON integer, never ``true``/``1.0``; str class: a
  string);
- regression: a finite number within float32's range, as a float feature (a JSON integer
  or float; booleans refused);
- ``request_id``: as ``/predict``'s (``app.model.decoder.REQUEST_ID``);
- ``observed_at``: ISO 8601, optional; a time without a zone is UTC.
  Written normalised to UTC with a ``Z`` (clamped to the calendar's ends when
  its offset carries it past year 1 or 9999).

Each check returns problems as ``detail`` entries (``loc`` relative to the
label object) so the caller can put them under its own prefix.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from app.errors import clip
from app.model.decoder import FLOAT32_MAX, FLOAT32_OVERFLOW, FLOAT32_RANGE, REQUEST_ID
from app.model.manifest import Manifest

LABEL_KEYS = frozenset({"request_id", "label", "observed_at"})
MAX_TIME_CHARS = 64
_REQUEST_ID: TypeAdapter[str] = TypeAdapter(REQUEST_ID)

Problem = dict[str, Any]


class LabelRules:
    """What a label must be for one model (built once per primary model, used per label)."""

    def __init__(self, manifest: Manifest) -> None:
        self.task = manifest.task
        classes = manifest.outputs.classes or []
        self.classes: frozenset[int | str] = frozenset(classes)
        self.class_type: type = str if classes and isinstance(classes[0], str) else int
        shown = ", ".join(repr(c) if isinstance(c, str) else str(c) for c in classes[:20])
        self.classes_text = clip("[" + shown + (", …" if len(classes) > 20 else "") + "]")

    def json_schema(self) -> dict[str, Any]:
        """The JSON schema of one label object for this model (OpenAPI ``FeedbackRequest``)."""
        if self.task == "regression":
            label: dict[str, Any] = {
                "type": "number",
                "description": "the observed value (finite, within float32's range)",
                "minimum": -FLOAT32_MAX,
                "maximum": FLOAT32_MAX,
            }
        else:
            label = {
                "type": "string" if self.class_type is str else "integer",
                "enum": sorted(self.classes, key=str),
                "description": "one of the model's classes, with its JSON type",
            }
        return {
            "type": "object",
            "required": ["request_id", "label"],
            "additionalProperties": False,
            "properties": {
                "request_id": {"type": "string", "minLength": 1, "maxLength": 128},
                "label": label,
                "observed_at": {"type": "string", "format": "date-time", "maxLength": MAX_TIME_CHARS},
            },
        }

    def check_label(self, value: Any) -> Problem | None:
        """The problem with ``value`` as a label, or None (loc ``["label"]``)."""
        if self.task == "regression":
            if isinstance(value, bool) or not isinstance(value, int | float):
                return _problem("label", "expected a number (regression model)", "float_type")
            if not math.isfinite(value):
                return _problem("label", "expected a finite number", "finite_number")
            if not -FLOAT32_OVERFLOW < value < FLOAT32_OVERFLOW:  # beyond what the float32 model can answer
                return _problem("label", FLOAT32_RANGE[1], FLOAT32_RANGE[0])
            return None
        if isinstance(value, bool) or not isinstance(value, self.class_type):
            kind = "a string" if self.class_type is str else "an integer"
            return _problem("label", f"expected {kind}: one of the model's classes {self.classes_text}", "label_type")
        if value not in self.classes:
            return _problem("label", f"unknown class; the model's classes are {self.classes_text}", "unknown_class")
        return None

    def check(self, obj: Any) -> tuple[dict[str, Any] | None, list[Problem]]:
        """A label object ``{"request_id", "label", "observed_at"?}``: ``(normalised, [])`` or ``(None, problems)``."""
        if not isinstance(obj, dict):
            return None, [{"loc": [], "msg": "expected an object with request_id and label", "type": "dict_type"}]
        problems = [
            {"loc": [clip(k)], "msg": "unknown field", "type": "extra_forbidden"} for k in obj if k not in LABEL_KEYS
        ]
        request_id = obj.get("request_id")
        if "request_id" not in obj:
            problems.append(_problem("request_id", "field required", "missing"))
        else:
            try:
                _REQUEST_ID.validate_python(request_id)
            except ValidationError as exc:
                e = exc.errors(include_url=False, include_context=False, include_input=False)[0]
                problems.append(_problem("request_id", e["msg"], e["type"]))
        if "label" not in obj:
            problems.append(_problem("label", "field required", "missing"))
        else:
            p = self.check_label(obj["label"])
            if p is not None:
                problems.append(p)
        observed_at = obj.get("observed_at")
        if observed_at is not None:
            observed_at, p = parse_time(observed_at)
            if p is not None:
                problems.append(p)
        if problems:
            return None, problems
        label = obj["label"]
        if self.task == "regression":
            label = float(label)
        return {"request_id": request_id, "label": label, "observed_at": observed_at}, []


def parse_time(value: Any, field: str = "observed_at") -> tuple[str | None, Problem | None]:
    """An ISO 8601 time as UTC ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``, or the problem with it."""
    if isinstance(value, datetime):
        when = value
    elif not isinstance(value, str) or len(value) > MAX_TIME_CHARS:
        return None, _problem(field, "expected an ISO 8601 date and time string", "datetime_type")
    else:
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return None, _problem(field, "not an ISO 8601 date and time", "datetime_parsing")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # no zone given: UTC, like every time in the logs
    try:
        when = when.astimezone(UTC)
    except OverflowError:  # an offset at the calendar's ends: the nearest instant UTC can hold
        when = (datetime.min if when.year == 1 else datetime.max).replace(tzinfo=UTC)
    return when.isoformat().replace("+00:00", "Z"), None


_last: tuple[Manifest | None, LabelRules | None] = (None, None)


def rules_for(manifest: Manifest) -> LabelRules:
    """The rules of ``manifest``, built once while it stays the primary model's."""
    global _last
    known, rules = _last
    if known is not manifest or rules is None:
        rules = LabelRules(manifest)
        _last = (manifest, rules)
    return rules


def _problem(field: str, msg: str, type_: str) -> Problem:
    return {"loc": [field], "msg": msg, "type": type_}

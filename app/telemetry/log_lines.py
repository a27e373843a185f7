"""The line formats of the prediction, shadow and label logs.

Line formats are defined here and only here: ``LINE_FIELDS`` names the
fields of each ``kind`` of line (``prediction``, ``shadow``, ``shadow_drops``,
``label``) in order, with their types, and ``prediction_line`` /
``shadow_line`` / ``shadow_drops_line`` / ``label_line`` shape records that
way; the shadow and the label log (``app.telemetry.label_log``, the
prediction log's writer under the ``labels-`` prefix) build their records
with them and ``app.jobs.logdata`` and ``app.jobs.compact`` read the files
by them. ``timestamp`` is ISO 8601 UTC, latencies are seconds.

What a prediction holds follows the model's task: ``prediction`` is the
label (int or string) of a classifier or the value (float) of a regressor;
``probability`` is the positive class's (binary), the predicted label's
(multiclass) or null (regression); ``probabilities`` maps every class name
to its probability (multiclass only, else null). A shadow line names the
``task`` both versions share; its ``abs_diff`` is the absolute difference of
the positive-class probability (binary), of the predicted value
(regression), or the largest absolute difference of any class's probability
(multiclass, where the label disagreement is ``primary_prediction <>
shadow_prediction``).

Sampling (``sample_rate`` below 1): the writer
(``app.telemetry.prediction_log``) keeps a prediction record when a seeded
MurmurHash3 of its ``request_id``, scaled to [0, 1), is below the rate
(:func:`sampled_in`), so the decision is the same in every process and for
every retry of a request; the others are counted
(``prediction_log_sampled_out_total``), not written. Every other kind of
line (shadow records, including those whose prediction was left out, and
``shadow_drops``) is always written. Each prediction line carries the
``sample_rate`` it was kept under, so a reader can weight counts or report
the rate; labels can only join the predictions that were written.

``trace_id`` is the OpenTelemetry trace of the request (lowercase hex), null
when tracing is off.

``user_id`` is written as sent (``user_id_mode="plain"``) or as the hex
HMAC-SHA256 of it under a secret key (``"hash"``): stable, so one user's
predictions can still be grouped, but not reversible without the key. The
key itself is never written anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import mmh3

if TYPE_CHECKING:
    from app.predictor import PredictionRecord

FieldType = Literal["text", "int", "float", "json", "timestamp"]

PREDICTION_FIELDS: tuple[tuple[str, FieldType], ...] = (
    ("timestamp", "timestamp"),
    ("request_id", "text"),
    ("model_version", "text"),
    ("variant", "text"),
    ("user_id", "text"),
    ("features", "json"),  # the full model input by feature name
    ("prediction", "json"),  # int or string label, or float value
    ("probability", "float"),
    ("probabilities", "json"),  # {class: p}, multiclass only
    ("latency", "float"),
    ("feature_tier", "text"),
    ("trace_id", "text"),  # null when tracing is off
    ("sample_rate", "float"),  # the MODELSERVE_LOG_SAMPLE_RATE this line was kept under
)
SHADOW_FIELDS: tuple[tuple[str, FieldType], ...] = (
    ("timestamp", "timestamp"),
    ("request_id", "text"),  # the primary's, so the two join
    ("primary_version", "text"),
    ("shadow_version", "text"),
    ("task", "text"),
    ("primary_prediction", "json"),
    ("primary_probability", "float"),
    ("shadow_prediction", "json"),  # shadow_* and abs_diff are null unless outcome is ok
    ("shadow_probability", "float"),
    ("abs_diff", "float"),
    ("outcome", "text"),  # ok, error or timeout
    ("primary_latency", "float"),
    ("shadow_latency", "float"),
)
SHADOW_DROPS_FIELDS: tuple[tuple[str, FieldType], ...] = (
    ("timestamp", "timestamp"),
    ("shadow_version", "text"),
    ("dropped", "int"),  # records the shadow queue dropped since the last such line
)
LABEL_FIELDS: tuple[tuple[str, FieldType], ...] = (
    ("timestamp", "timestamp"),  # when the label was received; the latest per request_id wins
    ("request_id", "text"),  # the prediction's, so the two join
    ("label", "json"),  # the class as JSON keeps its type (int or str), or a number for regression
    ("observed_at", "timestamp"),  # when the outcome happened, as the client said; may be null
    ("source", "text"),  # api or import
)
LINE_FIELDS: dict[str, tuple[tuple[str, FieldType], ...]] = {
    "prediction": PREDICTION_FIELDS,
    "shadow": SHADOW_FIELDS,
    "shadow_drops": SHADOW_DROPS_FIELDS,
    "label": LABEL_FIELDS,
}
"""Every field of each ``kind`` of line, after ``kind`` itself, in line order."""


SAMPLE_SEED = 0x6D5F_6C6F  # fixed for good: changing it changes which request ids every writer keeps


def sampled_in(request_id: str, rate: float) -> bool:
    """Whether a prediction record with this ``request_id`` is kept at ``rate`` (same answer everywhere, always)."""
    if rate >= 1.0:
        return True
    return mmh3.hash(request_id, SAMPLE_SEED, signed=False) < rate * 4294967296.0  # hash / 2**32 < rate


def prediction_line(
    record: PredictionRecord, user_id: str | None, sample_rate: float = 1.0, timestamp: datetime | None = None
) -> dict[str, Any]:
    """The ``prediction`` line of a record, with ``user_id`` as it is to be written (``timestamp``: the
    record's as a ``datetime``, when the caller has it already)."""
    return {
        "kind": "prediction",
        "timestamp": _iso(record.timestamp) if timestamp is None else timestamp,
        "request_id": record.request_id,
        "model_version": record.model_version,
        "variant": record.variant,
        "user_id": user_id,
        "features": record.features,
        "prediction": record.prediction,
        "probability": record.probability,
        "probabilities": record.probabilities,
        "latency": record.latency,
        "feature_tier": record.tier,
        "trace_id": record.trace_id,
        "sample_rate": sample_rate,
    }


def shadow_line(
    primary: PredictionRecord,
    *,
    timestamp: float,
    shadow_version: str,
    outcome: str,
    task: str = "binary_classification",
    shadow_prediction: Any = None,
    shadow_probability: float | None = None,
    shadow_probabilities: dict[str, float] | None = None,
    shadow_latency: float | None = None,
) -> dict[str, Any]:
    """The ``shadow`` line comparing the candidate's answer with the primary's (``timestamp`` in epoch seconds)."""
    return {
        "kind": "shadow",
        "timestamp": timestamp,
        "request_id": primary.request_id,
        "primary_version": primary.model_version,
        "shadow_version": shadow_version,
        "task": task,
        "primary_prediction": primary.prediction,
        "primary_probability": primary.probability,
        "shadow_prediction": shadow_prediction,
        "shadow_probability": shadow_probability,
        "abs_diff": shadow_difference(primary, task, shadow_prediction, shadow_probability, shadow_probabilities),
        "outcome": outcome,
        "primary_latency": primary.latency,
        "shadow_latency": shadow_latency,
    }


def shadow_difference(
    primary: PredictionRecord,
    task: str,
    shadow_prediction: Any,
    shadow_probability: float | None,
    shadow_probabilities: dict[str, float] | None,
) -> float | None:
    """``abs_diff`` of a shadow line (see the module doc); None when the shadow gave no answer."""
    if task == "regression":
        if shadow_prediction is None:
            return None
        return abs(float(shadow_prediction) - float(primary.prediction))
    if task == "multiclass_classification":
        if shadow_probabilities is None or primary.probabilities is None:
            return None
        mine = primary.probabilities
        return max(abs(p - mine.get(c, 0.0)) for c, p in shadow_probabilities.items())
    if shadow_probability is None or primary.probability is None:
        return None
    return abs(shadow_probability - primary.probability)


def shadow_drops_line(*, timestamp: float, shadow_version: str | None, dropped: int) -> dict[str, Any]:
    """The ``shadow_drops`` line: how many records the shadow dropped (``timestamp`` in epoch seconds)."""
    return {"kind": "shadow_drops", "timestamp": timestamp, "shadow_version": shadow_version, "dropped": dropped}


def label_line(
    *, timestamp: float, request_id: str, label: int | str | float, observed_at: str | None, source: str
) -> dict[str, Any]:
    """The ``label`` line for ``request_id`` (``timestamp``: epoch seconds; ``observed_at``: ISO 8601 UTC Z)."""
    return {
        "kind": "label",
        "timestamp": timestamp,
        "request_id": request_id,
        "label": label,
        "observed_at": observed_at,
        "source": source,
    }


def hash_user_id(user_id: str, key: bytes) -> str:
    """The keyed hash written instead of a user id (hex HMAC-SHA256)."""
    return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()


def _iso(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)

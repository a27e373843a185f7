"""POST /feedback and /feedback/batch: ground truth for earlier predictions, appended to the label log.

Answers 202 once the labels are queued for the label log (written within
``MODELSERVE_LOG_FLUSH_SECONDS``, and on shutdown before the process exits).
A label must fit the primary model's task (``app.labels``); a batch with any
bad label is refused whole (422, every bad field named) and nothing of it is
written. Without ``MODELSERVE_LOG_DIR`` there is no label log: 404. While
the label log is known to be failing (a full disk, a read-only directory:
``modelserve_label_log_writable`` 0) labels are refused with 503 and
``Retry-After`` rather than answered 202 and dropped; the writer probes the
directory and takes labels again as soon as it can write.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from app.api.body import read_json_body
from app.api.deps import ContainerDep, LabelLogDep, SettingsDep
from app.api.openapi import json_answer, json_body
from app.errors import COLLECT_LIMIT, Unavailable, ValidationFailed, clip
from app.labels import rules_for
from app.telemetry.label_log import LabelLog

router = APIRouter(tags=["feedback"])

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No label log (MODELSERVE_LOG_DIR unset)"},
    413: {"description": "Body too large"},
    415: {"description": "Not JSON"},
    422: {"description": "Invalid label: every offending field named"},
    503: {"description": "Not ready, or the label log cannot write"},
}


RESPONSES: dict[int | str, dict[str, Any]] = {
    202: json_answer("FeedbackAccepted", "Queued for the label log"),
    **ERRORS,
}


def _accepted(n: int) -> Response:
    return Response(orjson.dumps({"accepted": n}), status_code=202, media_type="application/json")


LOG_RETRY_AFTER_SECONDS = 2.0
"""Retry-After while the label log cannot write: a few of its writer's recovery probes (one a flush interval)."""


def _writable(labels: LabelLog) -> None:
    """Refuse labels the label log is known to be unable to write (they would be answered 202, then dropped)."""
    if labels.failure is not None:
        raise Unavailable(
            f"label log cannot write ({labels.failure}); labels are not accepted now", LOG_RETRY_AFTER_SECONDS
        )


def _parse(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed(
            "invalid request: body is not JSON", [{"loc": ["body"], "msg": str(exc)[:200], "type": "json_invalid"}]
        ) from None


@router.post("/feedback", status_code=202, responses=RESPONSES, openapi_extra=json_body("FeedbackRequest"))
async def feedback(request: Request, container: ContainerDep, labels: LabelLogDep, settings: SettingsDep) -> Response:
    invalid = container.metrics.feedback.labels("invalid")
    rules = rules_for(container.pool.get(settings.alias).manifest)
    try:
        body = await read_json_body(request, settings.max_body_bytes)
        item, problems = rules.check(_parse(body))
    except ValidationFailed:
        invalid.inc()
        raise
    if item is None:
        invalid.inc()
        detail = [{**p, "loc": ["body", *p["loc"]]} for p in problems]
        names = ", ".join(".".join(str(x) for x in d["loc"][1:]) or "<body>" for d in detail)
        raise ValidationFailed(f"invalid label: {names}", detail)
    _writable(labels)
    labels.submit_label(item["request_id"], item["label"], item["observed_at"], "api")
    container.metrics.feedback.labels("accepted").inc()
    return _accepted(1)


@router.post("/feedback/batch", status_code=202, responses=RESPONSES, openapi_extra=json_body("FeedbackBatchRequest"))
async def feedback_batch(
    request: Request, container: ContainerDep, labels: LabelLogDep, settings: SettingsDep
) -> Response:
    invalid = container.metrics.feedback.labels("invalid")
    rules = rules_for(container.pool.get(settings.alias).manifest)
    try:
        body = await read_json_body(request, settings.batch_max_body_bytes)
        items = _batch_items(_parse(body), settings.max_batch_size)
    except ValidationFailed:
        invalid.inc()
        raise
    good: list[dict[str, Any]] = []
    detail: list[dict[str, Any]] = []
    total = 0
    for i, obj in enumerate(items):
        item, problems = rules.check(obj)
        if item is None:
            total += len(problems)
            if len(detail) < COLLECT_LIMIT:
                detail.extend({**p, "loc": ["body", "labels", i, *p["loc"]]} for p in problems)
        elif not total:
            good.append(item)
    if total:
        invalid.inc(len(items))
        shown = sorted({d["loc"][2] for d in detail})[:10]
        raise ValidationFailed(
            f"invalid labels: {total} error(s) in labels {', '.join(map(str, shown))}; nothing was written",
            detail[:COLLECT_LIMIT],
            total,
        )
    _writable(labels)
    for item in good:
        labels.submit_label(item["request_id"], item["label"], item["observed_at"], "api")
    container.metrics.feedback.labels("accepted").inc(len(good))
    return _accepted(len(good))


def _batch_items(doc: Any, limit: int) -> list[Any]:
    if not isinstance(doc, dict) or not isinstance(doc.get("labels"), list):
        raise ValidationFailed(
            'invalid request: expected {"labels": [...]}',
            [{"loc": ["body", "labels"], "msg": "expected a list of labels", "type": "list_type"}],
        )
    extra = [k for k in doc if k != "labels"]
    if extra:
        raise ValidationFailed(
            "invalid request: unknown field",
            [{"loc": ["body", clip(k)], "msg": "unknown field", "type": "extra_forbidden"} for k in extra[:10]],
        )
    items: list[Any] = doc["labels"]
    if not items:
        raise ValidationFailed(
            "invalid request: no labels",
            [{"loc": ["body", "labels"], "msg": "at least one label", "type": "too_short"}],
        )
    if len(items) > limit:
        raise ValidationFailed(
            f"invalid request: {len(items)} labels, at most {limit} (MODELSERVE_MAX_BATCH_SIZE)",
            [{"loc": ["body", "labels"], "msg": f"at most {limit} labels", "type": "too_long"}],
        )
    return items

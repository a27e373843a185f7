"""POST /predict and /predict/batch: read the raw body, hand it to the predictor."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from app.api.body import read_json_body
from app.api.deps import PredictorDep, SettingsDep
from app.api.openapi import json_answer, json_body

router = APIRouter(tags=["predict"])

ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"description": "Body too large"},
    415: {"description": "Not JSON"},
    422: {"description": "Invalid input: every offending field named"},
    404: {"description": "Unknown user"},
    503: {"description": "Not ready, or features unavailable"},
}


@router.post(
    "/predict",
    responses={200: json_answer("PredictResponse", "The answer; its fields follow the model's task"), **ERRORS},
    openapi_extra=json_body("PredictRequest"),
)
async def predict(request: Request, predictor: PredictorDep, settings: SettingsDep) -> Response:
    body = await read_json_body(request, settings.max_body_bytes)
    record = await predictor.predict(body)
    return Response(
        orjson.dumps(record.response()),
        media_type="application/json",
        headers={"X-Model-Version": record.model_version},
    )


@router.post(
    "/predict/batch",
    responses={200: json_answer("BatchResponse", "One answer per instance, in order"), **ERRORS},
    openapi_extra=json_body("BatchRequest"),
)
async def predict_batch(request: Request, predictor: PredictorDep, settings: SettingsDep) -> Response:
    body = await read_json_body(request, settings.batch_max_body_bytes)
    records = await predictor.predict_batch(body)
    versions = ",".join(sorted({r.model_version for r in records}))
    return Response(
        orjson.dumps({"predictions": [r.response() for r in records]}),
        media_type="application/json",
        headers={"X-Model-Version": versions},
    )
